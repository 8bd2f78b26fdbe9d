"""The papers' tables: their columns and numbers, with this run's rows and footnotes beside them."""

from __future__ import annotations

import csv
import io

import pytest

from talkhead_models.reporting.papers import PAPER_TABLES, mapped_variants, paper_number, table
from talkhead_models.reporting.records import load_records
from talkhead_models.reporting.tables import NOT_RUN, build_table, build_tables, to_csv, to_markdown
from tests.reporting.records_fixture import LPIPS_MISSING, write_corpus

EXPECTED_TABLES = {"r2talker_table1", "r2talker_table4", "gstalker_table1", "gstalker_table2", "gstalker_table4",
                   "gstalker_table5", "jean_table1", "jean_table2", "s3dnerf_table1", "s3dnerf_table2",
                   "s3dnerf_ablation"}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return load_records(write_corpus(tmp_path_factory.mktemp("metrics")))


def test_every_paper_table_is_built_with_the_papers_columns_in_markdown_and_csv(records):
    assert {spec.id for spec in PAPER_TABLES} == EXPECTED_TABLES
    built = {t.id: t for t in build_tables(records)}
    for spec in PAPER_TABLES:
        result = built[spec.id]
        headers = [column.header for column in spec.columns]
        assert result.headers[4:] == headers
        markdown = to_markdown(result)
        assert "| " + " | ".join(headers) + " |" in markdown
        csv_rows = list(csv.reader(io.StringIO(to_csv(result))))
        assert csv_rows[0][4:-1] == headers
        assert len(csv_rows) == 1 + len(result.rows)
        # every paper row is there, in the paper's order, before this run's rows
        assert [r.method.text for r in result.paper_rows()] == [row.label for row in spec.rows]
        assert result.rows[:len(spec.rows)] == result.paper_rows()


def test_known_paper_numbers_and_arrows():
    assert table("r2talker_table4").rows[1].values == ("26.5861", "0.0939", "2.3311", "7.1664")
    gstalker = table("gstalker_table1")
    assert [c.header for c in gstalker.columns] == ["PSNR ↑", "LPIPS ↓", "LMD ↓", "Sync ↑", "AUE ↓",
                                                    "Training time ↓", "Inference FPS ↑"]
    assert gstalker.rows[-1].values[-2:] == ("40min", "125")
    assert paper_number(table("gstalker_table4").rows[0].values[0]) == float("inf")
    assert table("jean_table1").rows[-1].values == ("4.466", "0.095", "0.043", "21.224", "0.720", "0.174")
    assert table("s3dnerf_table2").rows[-1].values[-1] == "<0.01h"
    assert [c.header for c in table("gstalker_table2").columns] == [
        "Testset A Sync ↑", "Testset A AUE ↓", "Testset B Sync ↑", "Testset B AUE ↓"]
    assert mapped_variants()["r2talker"] == ["audio_baseline", "", "landmark_encoding", "maglo"]


def test_paper_numbers_sit_beside_ours_with_the_mean_over_identities(records):
    result = build_table(table("r2talker_table4"), records)
    paper = {r.method.text: r for r in result.paper_rows()}
    assert paper["+ Landmark encoding"].cells[0].text == "26.5861"
    assert paper["+ Landmark encoding"].matches == "r2talker_landmark_encoding"
    assert result.cell("r2talker_audio_baseline", "PSNR ↑").text == "26.0000"   # (25 + 27) / 2
    assert result.our_row("r2talker_audio_baseline").identities == "S001, S002"
    assert result.our_row("r2talker_landmark_encoding").matches == "+ Landmark encoding"
    markdown = to_markdown(result)
    assert "| paper | + Landmark encoding |" in markdown and "| this run | r2talker_landmark_encoding " in markdown


def test_ground_truth_psnr_is_inf_and_reference_rows_lead_one_per_identity(records):
    result = build_table(table("gstalker_table4"), records)
    # each run is read against the reference rows of its own identity: no reference row is a mean over identities
    leading = [(r.method.text, r.identities) for r in result.our_rows()[:5]]
    assert leading == [("ground_truth", "S001"), ("ground_truth", "S002"), ("static", "S001"), ("static", "S002"),
                       ("nearest_pose", "")]
    assert result.our_row("nearest_pose").not_run and result.our_row("nearest_pose").matches == "reference"
    assert result.cell("ground_truth", "PSNR ↑").text == "inf"
    psnr = [c.header for c in result.columns].index("PSNR ↑")
    assert [r.cells[psnr].text for r in result.our_rows() if r.method.text == "static"] == ["20.00", "22.00"]


def test_na_metric_is_na_with_its_reason_in_a_footnote(records):
    result = build_table(table("r2talker_table1"), records)
    cell = result.cell("r2talker", "LPIPS ↓")
    assert cell.text == "n/a" and cell.marks
    assert LPIPS_MISSING in result.footnotes[cell.marks[0] - 1]
    sync = result.cell("r2talker_audio_baseline", "Sync ↑")   # n/a on S002 only
    assert sync.text == "5.0000"
    assert any("S002" in result.footnotes[m - 1] and "1 of 2" in result.footnotes[m - 1] for m in sync.marks)
    assert any(text.startswith("Sync: substitute:") for text in result.footnotes)
    assert any(text.startswith("FPS: measured on CPU") for text in result.footnotes)


def test_a_method_without_records_is_not_run(records):
    result = build_table(table("r2talker_table4"), records)
    row = result.our_row("r2talker_maglo")
    assert row.not_run and [c.text for c in row.cells] == [NOT_RUN] * 4
    assert "r2talker_maglo: not run" in result.footnotes[row.method.marks[0] - 1]
    comparison = build_table(table("gstalker_table1"), records)
    assert comparison.our_row("gstalker").not_run and comparison.our_row("jean_audio_only").not_run
    assert "not run" in to_csv(comparison).splitlines()[-1]


def test_cross_driven_columns_come_from_the_cross_setting(records):
    result = build_table(table("gstalker_table2"), records)
    assert result.cell("static", "Testset A Sync ↑").text == "0.900"
    assert result.cell("static", "Testset B Sync ↑").text == "–"   # one cross-driven set in this corpus
    assert [c.text for c in result.our_row("gstalker").cells] == [NOT_RUN, NOT_RUN, "–", "–"]


def test_tick_columns_copy_the_mapped_paper_row():
    from talkhead_models.reporting.records import RecordSet

    result = build_table(table("jean_table2"), RecordSet([]))
    full = result.our_row("jean")
    assert [c.text for c in full.cells[:4]] == ["✓", "–", "✓", "✓"]
    assert [c.text for c in full.cells[4:]] == [NOT_RUN] * 3


def test_all_results_table_keeps_every_metric_of_every_run(records):
    everything = build_tables(records)[-1]
    assert "cross AUE ↓" in everything.headers and "self Training time ↓" in everything.headers
    assert {r.method.text for r in everything.rows} == {"ground_truth", "static", "r2talker",
                                                        "r2talker_audio_baseline", "r2talker_landmark_encoding"}


def test_every_run_row_names_its_demo_aids_in_a_footnote(records):
    result = build_table(table("r2talker_table4"), records)
    baseline = result.our_row("r2talker_audio_baseline").method
    assert [result.footnotes[m - 1] for m in baseline.marks] == [
        "r2talker_audio_baseline: demo aids: a2m audio, landmark grid 4/16 levels"]
    full = result.our_row("r2talker").method
    assert [result.footnotes[m - 1] for m in full.marks] == ["r2talker: no demo aids"]
    assert not result.our_row("static").method.marks   # a reference row trains nothing
    assert "r2talker_audio_baseline: demo aids: a2m audio" in to_csv(result)


def test_several_seeds_show_mean_and_spread(tmp_path):
    from tests.reporting.records_fixture import write_record

    for seed, psnr in ((0, 25.0), (1, 26.0)):
        write_record(tmp_path, "r2talker", "r2talker", "", "S001", {"PSNR": psnr}, seed=seed, demo_aids=[])
    result = build_table(table("r2talker_table4"), load_records(tmp_path))
    cell = result.cell("r2talker", "PSNR ↑")
    assert cell.text == "25.5000 ± 0.7071"   # the sample standard deviation of 25 and 26
    assert any("mean ± standard deviation over seeds 0, 1" in result.footnotes[m - 1] for m in cell.marks)


def test_a_seed_left_out_is_a_footnote_of_its_row(tmp_path):
    from tests.reporting.records_fixture import write_record

    for seed, psnr, digest in ((0, 25.0, "a" * 64), (1, 26.0, "a" * 64), (2, 40.0, "b" * 64)):
        write_record(tmp_path, "r2talker", "r2talker", "", "S001", {"PSNR": psnr}, seed=seed, demo_aids=[],
                     inputs_digest=digest)
    result = build_table(table("r2talker_table4"), load_records(tmp_path))
    assert result.cell("r2talker", "PSNR ↑").text == "25.5000 ± 0.7071"   # seed 2's 40 dB is not in the mean
    notes = [result.footnotes[m - 1] for m in result.our_row("r2talker").method.marks]
    assert notes[0] == "r2talker: no demo aids"
    assert notes[1].startswith("r2talker S001 seed 2: left out of the mean; its record was made from other code")
    left_out = result.footnotes.index(notes[1]) + 1
    assert [row.method.text for row in result.rows if left_out in row.method.marks] == ["r2talker"]
    assert "seed 2: left out of the mean" in to_csv(result) and "seed 2: left out of the mean" in to_markdown(result)
