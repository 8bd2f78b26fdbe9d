"""Tests of talkhead_models.reporting and the tables stage."""
