"""The four papers' tables as data: their columns, their reported numbers, and which of our runs each row is.

Numbers are copied as printed in the four papers (read from plain-text
extractions of them, hence the notes on lost cells below); ``None`` is a
blank or a dash. Each paper row maps to
one (family, variant) of this project, or to none (a baseline we do not
reproduce). Each column names the metric of ours it is compared with and
the setting (self- or cross-driven) our number comes from.

Where the source was unclear:

* R2-Talker Table 4: the header row lost its first cell in the text
  extraction; the numbers are unambiguous. Table 1's FPS of the
  baselines are the paper's "proportional conversion" of A100 timings;
  its supplementary Table 5 (RTX 3090) gives 42.39 / 37.55 / 51.71 FPS
  for RAD-NeRF / GeneFace++ / R2-Talker instead.
* GSTalker: column headers print "Trainging time" (Table 1) and "Snyc"
  (Table 5); they are spelled correctly here. "Wav2Vec" in Table 5 is
  wav2vec 2.0 (Baevski et al., 2020). The text claims the lowest LMD,
  2.695, against RAD-NeRF's 2.696.
* JEAN Table 2: the text extraction kept the ticks but not their columns;
  they are reconstructed from the caption ((a) emotion-recognition
  features only; (b) 3DMM parameters only; (c) self-supervised audio
  encoder + emotion features; (d) audio encoder + transformer on 3DMM
  parameters; full: audio encoder + emotion features + transformer).
* S3D-NeRF: the numbers were read from a summary of the paper, not its text;
  the table numbers (1: single-shot methods on HDTF, 2: person-specific
  NeRFs on AD-NeRF's videos, 3: ablation) follow the summary's order.
  The full model's SSIM is 0.819 in Table 1 but 0.829 in the ablation.
* AD-NeRF is reported by three papers with different speeds (GSTalker:
  0.08 FPS, 36 h; S3D-NeRF: 0.13 FPS, 36 h), ER-NeRF's training time as
  2 h (GSTalker) and 4.5 h (S3D-NeRF).

Mapping choices: RAD-NeRF rows are our R2-Talker audio-conditioned
baseline (``r2talker_audio_baseline``, R2-Talker Table 4's first rung);
AD-NeRF rows are our JEAN network driven by audio alone
(``jean_audio_only``, JEAN compares with AD-NeRF as its audio-only
counterpart), NeRFace is JEAN driven by expression alone
(``jean_expression_only``). JEAN measures every Table 1 metric with the
audio from one video and the expression from another: our Exp-Diff columns
read that setting (``cross_expression``: clip A's audio, clip B's
expression, the same sentence in another emotion, Exp-Diff against B's
frames); PSNR/SSIM/LPIPS need a ground-truth frame, which only the
self-driven test set has, and LSE-C and ACD are read there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[str, str]

GROUND_TRUTH: Key = ("ground_truth", "")
STATIC: Key = ("static", "")
NEAREST_POSE: Key = ("nearest_pose", "")
REFERENCE_KEYS: tuple[Key, ...] = (GROUND_TRUTH, STATIC, NEAREST_POSE)
"""The reference rows every table of ours carries, in this order."""

PAPERS = {"r2talker": "R2-Talker", "gstalker": "GSTalker", "jean": "JEAN", "s3dnerf": "S3D-NeRF"}
"""Family -> the paper's name for its method."""

PAPER_METHOD: dict[str, Key] = {"r2talker": ("r2talker", ""), "gstalker": ("gstalker", "paper_audio"),
                                "jean": ("jean", ""), "s3dnerf": ("s3dnerf", "")}
"""Family -> the run that is the paper's method in the comparison tables and in the claims about the method as a
whole (speed, training time): the family's full model, except GSTalker's, whose profile replaces its audio encoder
with the audio-to-motion model's mouth displacements (a demo aid); ``gstalker_paper_audio`` keeps the encoder."""

UP, DOWN = "↑", "↓"
TICK = "✓"


@dataclass(frozen=True)
class Column:
    """One column of a paper table."""

    label: str
    """As the paper prints it (typos corrected), without the arrow."""
    metric: str | None
    """Our metric name (talkhead_models.metrics.METRICS) or None for a configuration column (ticks)."""
    higher_is_better: bool | None = None
    """The arrow; None for configuration columns."""
    setting: str | None = "self"
    """Which of our settings fills the column ("self" / "cross" / "cross_expression"); None: no counterpart in this
    run."""
    group: str = ""
    """A column group the paper prints above the label ("Testset A")."""
    digits: int = 3
    """Decimals of our cells (the paper's precision for that column)."""

    @property
    def header(self) -> str:
        arrow = "" if self.higher_is_better is None else (UP if self.higher_is_better else DOWN)
        return " ".join(part for part in (self.group, self.label, arrow) if part)

    @property
    def is_metric(self) -> bool:
        return self.metric is not None


@dataclass(frozen=True)
class PaperRow:
    """One row the paper reports: the method as printed, its values as printed, and which run of ours it is."""

    label: str
    values: tuple[str | None, ...]
    ours: Key | None = None


@dataclass(frozen=True)
class PaperTable:
    """A table of a paper, as data."""

    id: str
    paper: str
    """Family whose paper it is: r2talker, gstalker, jean, s3dnerf."""
    number: str
    """How the paper refers to it ("Table 1")."""
    title: str
    kind: str
    """"comparison" (our full methods of every family join it) or "ablation" (only the variants it maps)."""
    columns: tuple[Column, ...]
    rows: tuple[PaperRow, ...]
    extra_ours: tuple[Key, ...] = ()
    """Runs of ours shown although no paper row maps to them."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row.values) != len(self.columns):
                raise ValueError(f"{self.id}: row {row.label!r} has {len(row.values)} values for "
                                 f"{len(self.columns)} columns")

    @property
    def paper_name(self) -> str:
        return PAPERS[self.paper]

    @property
    def settings(self) -> tuple[str, ...]:
        """Our settings the columns draw from, in column order."""
        found: list[str] = []
        for column in self.columns:
            if column.setting and column.is_metric and column.setting not in found:
                found.append(column.setting)
        return tuple(found)

    def paper_row_for(self, key: Key) -> PaperRow | None:
        return next((row for row in self.rows if row.ours == key), None)


def paper_number(text: str | None) -> float | None:
    """A printed value as a number ("34.65" -> 34.65, "∞" -> inf); None for blanks, N/A and times."""
    if text is None:
        return None
    cleaned = text.strip().replace("\\infty", "∞")
    if cleaned == "∞":
        return float("inf")
    try:
        return float(cleaned)
    except ValueError:
        return None


def _rows(*rows: tuple) -> tuple[PaperRow, ...]:
    return tuple(PaperRow(label, tuple(values), ours) for label, values, ours in rows)


def _c(label: str, metric: str | None, higher: bool | None, digits: int = 3, setting: str | None = "self",
       group: str = "") -> Column:
    return Column(label, metric, higher, setting=setting if metric else None, group=group, digits=digits)


R2TALKER_TABLE1 = PaperTable(
    id="r2talker_table1", paper="r2talker", number="Table 1", kind="comparison",
    title="Self-driven comparison on GeneFace's person-specific videos",
    columns=(_c("PSNR", "PSNR", True, 4), _c("LPIPS", "LPIPS", False, 4), _c("FID", "FID", False, 4),
             _c("LMD", "M-LMD", False, 4), _c("Sync", "Sync", True, 4), _c("Inference FPS", "FPS", True, 2)),
    rows=_rows(
        ("Wav2Lip [29]", ("N/A", "N/A", "23.0932", "2.9506", "9.3122", "11.95"), None),
        ("RAD-NeRF [37]", ("25.0359", "0.1326", "22.0074", "2.8910", "6.3348", "28.37"),
         ("r2talker", "audio_baseline")),
        ("ER-NeRF [19]", ("26.5732", "0.1313", "20.3462", "2.8131", "5.5852", "30.22"), None),
        ("Geneface++", ("26.6416", "0.1069", "19.2173", "2.3685", "7.3568", "23.55"), None),
        ("Ours", ("26.9664", "0.0867", "18.5090", "2.2957", "7.2962", "32.44"), ("r2talker", "")),
    ),
    notes=("The paper's FPS of the baselines are proportionally converted from A100 timings (its supplement's "
           "RTX 3090 profile: RAD-NeRF 42.39, GeneFace++ 37.55, R2-Talker 51.71 FPS at 450x450).",),
)

R2TALKER_TABLE4 = PaperTable(
    id="r2talker_table4", paper="r2talker", number="Table 4", kind="ablation",
    title="Ablation: from RAD-NeRF's audio conditioning to R2-Talker, one module at a time",
    columns=(_c("PSNR", "PSNR", True, 4), _c("LPIPS", "LPIPS", False, 4), _c("LMD", "M-LMD", False, 4),
             _c("Sync", "Sync", True, 4)),
    rows=_rows(
        ("RAD-NeRF [37]", ("25.0359", "0.1326", "2.8910", "6.3348"), ("r2talker", "audio_baseline")),
        ("+ Landmark encoding", ("26.5861", "0.0939", "2.3311", "7.1664"), ("r2talker", "landmark_encoding")),
        ("+ M-AGLO", ("26.7414", "0.0865", "2.2949", "7.2800"), ("r2talker", "maglo")),
        ("+ Progressive optimization", ("26.9664", "0.0867", "2.2957", "7.2962"), ("r2talker", "")),
    ),
)

_GS_TABLE1_COLUMNS = (_c("PSNR", "PSNR", True, 2), _c("LPIPS", "LPIPS", False, 4), _c("LMD", "M-LMD", False, 3),
                      _c("Sync", "Sync", True, 3), _c("AUE", "AUE", False, 3),
                      _c("Training time", "Training time", False, 2), _c("Inference FPS", "FPS", True, 2))

GSTALKER_TABLE1 = PaperTable(
    id="gstalker_table1", paper="gstalker", number="Table 1", kind="comparison",
    title="Self-driven comparison on AD-NeRF's videos (training time and FPS on one RTX 3090)",
    columns=_GS_TABLE1_COLUMNS,
    rows=_rows(
        ("Ground Truth", ("∞", "0", "0", "7.491", "0", None, None), GROUND_TRUTH),
        ("MakeItTalk(Zhou et al., 2020)", (None, None, "5.481", "5.112", "1.519", None, "12"), None),
        ("Wav2lip(Prajwal et al., 2020)", (None, None, "3.718", "6.892", "1.218", None, "15"), None),
        ("AD-NeRF(Guo et al., 2021)", ("31.39", "0.0857", "2.917", "5.426", "0.991", "36h", "0.08"),
         ("jean", "audio_only")),
        ("RAD-NeRF(Tang et al., 2022)", ("34.00", "0.0387", "2.696", "6.664", "0.882", "7h", "40"),
         ("r2talker", "audio_baseline")),
        ("ER-NeRF(Li et al., 2023)", ("33.10", "0.0291", "2.740", "5.708", "0.854", "2h", "34"), None),
        ("GSTalker", ("34.65", "0.0151", "2.695", "5.775", "0.862", "40min", "125"), PAPER_METHOD["gstalker"]),
    ),
    notes=("The paper leaves PSNR/LPIPS of MakeItTalk and Wav2Lip out (other audio was used to drive them).",
           "GSTalker's row is `gstalker_paper_audio` (its own audio encoder on mel features); `gstalker` reads the "
           "audio feature params.yaml selects (the demo: the audio-to-motion model's mouth displacements, an aid).",),
)

GSTALKER_TABLE2 = PaperTable(
    id="gstalker_table2", paper="gstalker", number="Table 2", kind="comparison",
    title="Cross-driven comparison: audio of unseen speakers (Testset A: SynObama, Testset B: NVP)",
    columns=(_c("Sync", "Sync", True, 3, "cross", "Testset A"), _c("AUE", "AUE", False, 3, "cross", "Testset A"),
             _c("Sync", "Sync", True, 3, None, "Testset B"), _c("AUE", "AUE", False, 3, None, "Testset B")),
    rows=_rows(
        ("Ground Truth", ("6.855", "0", "7.486", "0"), GROUND_TRUTH),
        ("MakeItTalk(Zhou et al., 2020)", ("5.351", "2.121", "5.091", "1.444"), None),
        ("Wav2Lip(Prajwal et al., 2020)", ("7.912", "1.822", "8.149", "1.259"), None),
        ("AD-NeRF(Guo et al., 2021)", ("4.855", "1.943", "4.698", "1.541"), ("jean", "audio_only")),
        ("RAD-NeRF(Tang et al., 2022)", ("5.747", "1.788", "6.372", "1.237"), ("r2talker", "audio_baseline")),
        ("ER-NeRF(Li et al., 2023)", ("5.830", "1.782", "6.800", "1.156"), None),
        ("Ours", ("6.299", "1.771", "6.718", "1.251"), PAPER_METHOD["gstalker"]),
    ),
    notes=("This corpus has one cross-driven audio set (another identity's voice); its numbers are shown under "
           "Testset A, Testset B has no counterpart here.",
           "The paper's Ground Truth row scores the real video of the test-set speaker."),
)

_GS_ABLATION_COLUMNS = (_c("PSNR", "PSNR", True, 2), _c("LPIPS", "LPIPS", False, 4), _c("LMD", "M-LMD", False, 3),
                        _c("Sync", "Sync", True, 3))

GSTALKER_TABLE4 = PaperTable(
    id="gstalker_table4", paper="gstalker", number="Table 4", kind="ablation",
    title="Ablation: static Gaussian initialisation, hash-grid deformation field, LPIPS loss (self-driven)",
    columns=_GS_ABLATION_COLUMNS,
    rows=_rows(
        ("Ground Truth", ("∞", "0", "0", "7.491"), GROUND_TRUTH),
        ("w/o static initialization", ("34.25", "0.0169", "3.068", "1.506"), ("gstalker", "no_static_init")),
        ("w/o hash grid", ("34.39", "0.0159", "2.798", "5.438"), ("gstalker", "no_hash_grid")),
        ("w/o LPIPS loss", ("34.66", "0.0259", "2.773", "5.305"), ("gstalker", "no_perceptual")),
        ("Ours", ("34.65", "0.0151", "2.695", "5.775"), ("gstalker", "")),
    ),
)

GSTALKER_TABLE5 = PaperTable(
    id="gstalker_table5", paper="gstalker", number="Table 5", kind="ablation",
    title="Ablation: the audio features driving the deformation field (self-driven)",
    columns=_GS_ABLATION_COLUMNS,
    rows=_rows(
        ("Ground Truth", ("∞", "0", "0", "7.491"), GROUND_TRUTH),
        ("Deepspeech(Amodei et al., 2016)", ("34.65", "0.0151", "2.695", "5.775"), ("gstalker", "audio_deepspeech")),
        ("Wav2Vec(Baevski et al., 2020)", ("34.65", "0.0149", "2.661", "5.903"), ("gstalker", "audio_wav2vec2")),
        ("Hubert(Hsu et al., 2021)", ("34.66", "0.0152", "2.657", "5.960"), ("gstalker", "audio_hubert")),
    ),
    extra_ours=(("gstalker", "paper_audio"), ("gstalker", "audio_whisper"), ("gstalker", "")),
    notes=("The paper's full GSTalker uses DeepSpeech (its Table 1 numbers). DeepSpeech's, wav2vec's and HuBERT's "
           "weights are not installed here; the speech features computed offline are mel (`gstalker_paper_audio`) "
           "and Whisper tiny.en's encoder (`gstalker_audio_whisper`, a row the paper does not have), both through "
           "the paper's audio smoother. The `gstalker` row reads the audio kind params.yaml selects (the demo: the "
           "audio-to-motion model's mouth displacements, a demo aid).",),
)

JEAN_TABLE1 = PaperTable(
    id="jean_table1", paper="jean", number="Table 1", kind="comparison",
    title="Comparison on MEAD (expression from one video, audio from another)",
    columns=(_c("LSE-C", "LSE-C", True), _c("ACD", "ACD", False),
             _c("Exp-Diff", "Exp-Diff", False, setting="cross_expression"),
             _c("PSNR", "PSNR", True), _c("SSIM", "SSIM", True), _c("LPIPS", "LPIPS", False)),
    rows=_rows(
        ("AD-NeRF [Guo et al. 2021]", ("4.380", "0.141", "0.080", "20.467", "0.698", "0.187"), ("jean", "audio_only")),
        ("NeRFace [Gafni et al. 2021]", ("1.966", "0.103", "0.023", "21.335", "0.736", "0.175"),
         ("jean", "expression_only")),
        ("EAMM [Ji et al. 2022]", ("1.771", "0.284", "0.111", "18.474", "0.592", "0.248"), None),
        ("PD-FGC [Wang et al. 2023a]", ("6.220", "0.657", "0.089", "21.094", "0.648", "0.228"), None),
        ("EAT [Gan et al. 2023]", ("7.200", "0.183", "0.078", "19.222", "0.691", "0.205"), None),
        ("Ours", ("4.466", "0.095", "0.043", "21.224", "0.720", "0.174"), ("jean", "")),
    ),
    notes=("JEAN drives every row with the audio of one video and the expression of another and scores "
           "PSNR/SSIM/LPIPS/Exp-Diff/ACD against the expression-source frames. This run: Exp-Diff reads the "
           "cross-expression setting (audio, cameras and landmarks of a held-out clip A; expression from clip B, the "
           "same sentence in another emotion, index-aligned) against B's frames, as the paper's; LSE-C, ACD, PSNR, "
           "SSIM and LPIPS read the self-driven test set (its own audio and expression, scored against its "
           "ground-truth frames), since no real frame shows A's lips with B's expression.",
           "The cross-expression records also hold LSE-C with A's audio, M-LMD against A's frames and Exp-Diff to "
           "audio source (against A's frames): the all-results table lists them.",),
)

JEAN_TABLE2 = PaperTable(
    id="jean_table2", paper="jean", number="Table 2", kind="ablation",
    title="Ablation of JEAN's audio and expression representations",
    columns=(_c("Self Supervised Audio Encoder", None, None), _c("3DMM Expression Parameters", None, None),
             _c("Emotion Recognition Features", None, None), _c("Expression Transformer", None, None),
             _c("LSE-C", "LSE-C", True), _c("Exp-Diff", "Exp-Diff", False, setting="cross_expression"),
             _c("LPIPS", "LPIPS", False)),
    rows=_rows(
        ("(a)", (None, None, TICK, None, "1.804", "0.027", "0.170"), ("jean", "emotion_features")),
        ("(b)", (None, TICK, None, None, "1.848", "0.022", "0.161"), ("jean", "expression_params")),
        ("(c)", (TICK, None, TICK, None, "1.760", "0.028", "0.168"), ("jean", "ssl_audio_emotion_features")),
        ("(d)", (TICK, TICK, None, TICK, "2.982", "0.071", "0.190"), ("jean", "transformer_on_params")),
        ("Full Net.", (TICK, None, TICK, TICK, "4.466", "0.043", "0.174"), ("jean", "")),
    ),
    notes=("Tick columns reconstructed from the caption (the text extraction lost their positions).",
           "As in Table 1, Exp-Diff reads the cross-expression setting (clip A's audio, clip B's expression, against "
           "B's frames: a variant that ignores the audio and copies B scores low, as the paper notes); LSE-C and "
           "LPIPS read the self-driven test set.",),
)

S3DNERF_TABLE1 = PaperTable(
    id="s3dnerf_table1", paper="s3dnerf", number="Table 1", kind="comparison",
    title="Comparison with single-shot methods on HDTF",
    columns=(_c("SSIM", "SSIM", True), _c("LPIPS", "LPIPS", False), _c("F-LMD", "F-LMD", False),
             _c("M-LMD", "M-LMD", False), _c("CPBD", "CPBD", True), _c("Sync", "Sync", True)),
    rows=_rows(
        ("Wav2Lip", ("0.749", "0.332", "3.582", "3.652", "0.195", "8.365"), None),
        ("SadTalker", ("0.776", "0.289", "3.623", "3.273", "0.234", "6.188"), None),
        ("StyleTalk", ("0.678", "0.386", "4.621", "3.654", "0.192", "6.473"), None),
        ("S³D-NeRF", ("0.819", "0.258", "2.799", "2.929", "0.263", "6.514"), ("s3dnerf", "")),
    ),
)

S3DNERF_TABLE2 = PaperTable(
    id="s3dnerf_table2", paper="s3dnerf", number="Table 2", kind="comparison",
    title="Comparison with person-specific NeRFs on AD-NeRF's videos (fit time for a new identity)",
    columns=(_c("SSIM", "SSIM", True), _c("M-LMD", "M-LMD", False), _c("Sync", "Sync", True),
             _c("FPS", "FPS", True, 2), _c("Fit Time", "Training time", False, 2)),
    rows=_rows(
        ("AD-NeRF", ("0.846", "1.982", "5.626", "0.13", "36h"), ("jean", "audio_only")),
        ("ER-NeRF", ("0.884", "1.659", "6.781", "29", "4.5h"), None),
        ("S³D-NeRF", ("0.852", "1.493", "7.118", "9.5", "<0.01h"), ("s3dnerf", "")),
    ),
    notes=("Fit Time is compared with our per-identity Training time (hours); for S3D-NeRF that is the time spent "
           "on a new identity, not the one-off corpus training.",),
)

S3DNERF_ABLATION = PaperTable(
    id="s3dnerf_ablation", paper="s3dnerf", number="Ablation table", kind="ablation",
    title="Ablation: deformation field and lip-sync discriminator",
    columns=(_c("SSIM", "SSIM", True), _c("LPIPS", "LPIPS", False), _c("F-LMD", "F-LMD", False),
             _c("M-LMD", "M-LMD", False), _c("Sync", "Sync", True)),
    rows=_rows(
        ("w/o Deform", ("0.556", "0.457", "N/A", "N/A", "0.240"), ("s3dnerf", "no_deform")),
        ("Naive Deform (ND)", ("0.744", "0.278", "3.475", "3.507", "5.201"), ("s3dnerf", "naive_deform")),
        ("Feat-Concatenate Deform", ("0.834", "0.242", "2.855", "3.196", "6.106"), ("s3dnerf", "concat_deform")),
        ("w/o Lip Sync", ("0.801", "0.263", "3.276", "3.342", "5.649"), ("s3dnerf", "no_lip_sync")),
        ("S³D-NeRF (full)", ("0.829", "0.258", "2.799", "2.929", "6.514"), ("s3dnerf", "")),
    ),
    notes=("The full model's SSIM is 0.829 here but 0.819 in Table 1 (as the source prints them).",),
)

PAPER_TABLES: tuple[PaperTable, ...] = (
    R2TALKER_TABLE1, R2TALKER_TABLE4,
    GSTALKER_TABLE1, GSTALKER_TABLE2, GSTALKER_TABLE4, GSTALKER_TABLE5,
    JEAN_TABLE1, JEAN_TABLE2,
    S3DNERF_TABLE1, S3DNERF_TABLE2, S3DNERF_ABLATION,
)
"""Every table the report reproduces, grouped by paper."""


def table(table_id: str) -> PaperTable:
    """The paper table ``table_id``; unknown ids list the known ones."""
    for spec in PAPER_TABLES:
        if spec.id == table_id:
            return spec
    raise KeyError(f"unknown table {table_id!r}; known: {', '.join(t.id for t in PAPER_TABLES)}")


def mapped_variants() -> dict[str, list[str]]:
    """Family -> the variant keys the tables expect (what the method registry should name its ablations)."""
    found: dict[str, list[str]] = {}
    for spec in PAPER_TABLES:
        for key in (*(row.ours for row in spec.rows if row.ours), *spec.extra_ours):
            variants = found.setdefault(key[0], [])
            if key[1] not in variants:
                variants.append(key[1])
    return found
