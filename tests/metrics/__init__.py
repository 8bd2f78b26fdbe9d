"""Tests of talkhead_models.metrics."""
