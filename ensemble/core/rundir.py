"""The run directory: the contract between the stages, as one object.

Every stage reads and writes documented files in one directory, and every path of that
layout is named here once (docs/architecture.md draws it)::

    runs/<name>/
      config.toml                                the experiment (ensemble run / demo)
      variants/<vid>/                            PEFT adapter + variant.json (the marker)
      variants/train.json, variants/.failed/     the population's recipe; failures
      answers/<condition>/<model_id>.parquet     one file per (condition, model)
      answers.json, answers.log.jsonl            the answer config; one line per invocation
      votes/                                     curves, per-problem W, vote.json (marker)
      fits/fit.json                              the fits and the comparison
      report.md, report.json, figures/*.png     the report; its input and settings

Stage commands also accept a votes directory or a lone answers file in place of a run
directory; :meth:`RunDir.of` and :func:`votes_dir_of` find the run directory or votes
directory that a path given by a user names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.toml"
VARIANT_MARKER = "variant.json"  # written last into every complete variant directory
VOTE_MARKER = "vote.json"  # written last into every complete votes directory
FIT_FILE = "fit.json"
REPORT_MARKER = "report.json"  # a report's input and settings, written after report.md
RESULT_DIRS = ("variants", "answers", "votes", "fits")  # what the stages write in a run dir


@dataclass(frozen=True)
class VotesDir:
    """The files of one votes directory (``ensemble vote``'s output set)."""

    path: Path

    @property
    def meta(self) -> Path:  # vote.json: settings, input hash, versions, diversity
        return self.path / VOTE_MARKER

    curve_csv = property(lambda self: self.path / "curve.csv")
    curve_parquet = property(lambda self: self.path / "curve.parquet")
    curve_by_model = property(lambda self: self.path / "curve_by_model.csv")
    per_problem = property(lambda self: self.path / "per_problem.parquet")
    per_problem_by_model = property(lambda self: self.path / "per_problem_by_model.parquet")
    voters = property(lambda self: self.path / "voters.csv")
    diversity = property(lambda self: self.path / "diversity.csv")

    # What a reader needs; the fit hashes these (fit.json records it).
    REQUIRED = ("curve.parquet", "per_problem.parquet", VOTE_MARKER)

    def is_complete(self) -> bool:
        return self.path.is_dir() and all((self.path / f).is_file() for f in self.REQUIRED)

    @property
    def fits(self) -> Path:
        """Where the fit of these votes goes by default: ``fits/`` beside them."""
        return self.path.parent / "fits"


@dataclass(frozen=True)
class RunDir:
    """Every path of one run directory.

    Examples
    --------
    >>> run = RunDir("runs/demo")
    >>> str(run.answer_file("repetition", "v004"))
    'runs/demo/answers/repetition/v004.parquet'
    >>> str(run.votes.meta)
    'runs/demo/votes/vote.json'
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, path: Path) -> "RunDir":
        """The run directory a user's path names: itself, or the run holding a stage's
        output directory (``runs/x/votes`` -> ``runs/x``)."""
        path = Path(path)
        if path.name in RESULT_DIRS and not (path / CONFIG).exists():
            return cls(path.parent)
        return cls(path)

    # --- the experiment ---
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    def result_dirs(self) -> list[str]:
        """The stage output directories present (``variants``, ``answers``, ...)."""
        return [d for d in RESULT_DIRS if (self.root / d).exists()]

    # --- training ---
    @property
    def variants(self) -> Path:
        return self.root / "variants"

    def variant(self, vid: str) -> Path:
        return self.variants / vid

    def variant_done(self, vid: str) -> bool:
        return (self.variant(vid) / VARIANT_MARKER).exists()

    @property
    def train_json(self) -> Path:  # the population's recipe, written once
        return self.variants / "train.json"

    @property
    def failed_dir(self) -> Path:  # one <vid>.json per failed variant
        return self.variants / ".failed"

    # --- answering ---
    @property
    def answers(self) -> Path:  # only parquet files: a dataset pandas/datasets read whole
        return self.root / "answers"

    def answer_file(self, condition: str, model_id: str) -> Path:
        return self.answers / condition / f"{model_id}.parquet"

    def answer_part(self, condition: str, model_id: str, start: int, stop: int) -> Path:
        """Samples start..stop-1 of a unit split across shards (eval.split); hidden, as
        pyarrow and datasets skip dot-directories, until merged into its answer file."""
        return self.answers / condition / ".parts" / f"{model_id}.r{start}-{stop}.parquet"

    @property
    def answers_json(self) -> Path:  # resolved answer config, adapter hashes, versions
        return self.root / "answers.json"

    @property
    def answers_log(self) -> Path:  # one JSON line per answering invocation
        return self.root / "answers.log.jsonl"

    def answer_lock(self, index: int, count: int) -> Path:
        return self.root / f".answer-shard-{index}-of-{count}.lock"

    # --- voting, fitting, reporting ---
    @property
    def votes(self) -> VotesDir:
        return VotesDir(self.root / "votes")

    @property
    def fits(self) -> Path:
        return self.root / "fits"

    @property
    def fit_json(self) -> Path:
        return self.fits / FIT_FILE

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def report_json(self) -> Path:
        return self.root / REPORT_MARKER

    @property
    def figures(self) -> Path:
        return self.root / "figures"


def votes_dir_of(path: Path) -> VotesDir:
    """The votes directory a user's path names: a votes directory, or a run holding one.

    Examples
    --------
    >>> str(votes_dir_of(Path("runs/x/votes")).path)
    'runs/x/votes'
    """
    path = Path(path)
    if (path / "votes").is_dir() and not (path / VOTE_MARKER).exists():
        return VotesDir(path / "votes")
    return VotesDir(path)


def default_output(source: Path, stage: str) -> Path:
    """Where a stage writes when no ``--out`` is given: beside its input, named after it.

    Inside a run directory the names are fixed (``RUN/votes`` -> ``RUN/fits``, the report
    in ``RUN``); any other input X gets ``X_<stage>`` next to it (``a.csv`` ->
    ``a_votes``, ``a_votes`` -> ``a_fits``), so two inputs in one folder never share a
    default output.

    Examples
    --------
    >>> default_output(Path("runs/x/votes"), "fits").as_posix()
    'runs/x/fits'
    >>> default_output(Path("a.csv"), "votes").as_posix(), default_output(Path("a_votes"), "report").as_posix()
    ('a_votes', 'a_report')
    """
    source = Path(source)
    if stage == "votes" and source.is_dir():
        return RunDir(source).votes.path
    if stage != "votes":
        source = votes_dir_of(source).path  # a run directory given for its votes
    if stage != "votes" and source.name == "votes":
        return source.parent if stage == "report" else source.parent / stage
    stem = source.stem if stage == "votes" else (
        source.name.removesuffix("votes").rstrip("_-.") or source.name)
    return source.parent / f"{stem}_{stage}"
