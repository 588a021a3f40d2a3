"""Every bad input gets one line: exit code 2, a single stderr line saying what was wrong, where (file, key,
value) and what to do, no traceback, and nothing half-written left behind.

One table: each case builds its bad input under a fresh folder and names the commands it applies to. Every
(case, command) pair runs through the real CLI entry (`vaelab.cli.main`); a few also run as
``python -m vaelab``. A command not in this branch yet (evaluate, classify, plot, report) or a reader not
here yet (npz, folder) skips, so the pairs turn on as those land. "Nothing left behind" is checked on the
whole folder: the same files, sizes and mtimes after the command as before it.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import make_idx_dir, write_raw_idx
from vaelab.cli import app, main

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY_MODEL = ["model.hidden=[8]", "model.latent_dim=2", "train.epochs=1", "train.batch_size=16"]


def registered(command: str) -> bool:
    """Whether `vaelab <command>` exists in this branch ('data info' style names included)."""
    import typer

    group = typer.main.get_command(app)
    for word in command.split():
        cmds = getattr(group, "commands", {})
        if word not in cmds:
            return False
        group = cmds[word]
    return True


def reader_present(kind: str) -> bool:
    from vaelab.data import sources

    return kind in sources.READERS


# ---------------------------------------------------------------------------------------------------------
# what every case shares: trained runs to break, a fresh folder, and the checks


@dataclass
class Runs:
    a: Path  # MLP, latent 2
    b: Path  # MLP, latent 3: "another model"
    c: Path  # MLP, latent 2, another seed: "another run" of the same model
    idx: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_idx_dir) -> Runs:
    from vaelab.config import load_config
    from vaelab.train import fit

    out = tmp_path_factory.mktemp("bad-input-runs")
    made = []
    for name, extra in (("a", []), ("b", ["model.latent_dim=3"]), ("c", ["train.seed=1"])):
        cfg = load_config(None, [f"data.source=idx:{tiny_idx_dir}", *TINY_MODEL, f"out_dir={out}", f"name={name}", *extra])
        made.append(Path(fit(cfg, quiet=True)["run_dir"]))
    return Runs(*made, idx=tiny_idx_dir)


@dataclass
class Env:
    tmp: Path
    runs: Runs
    _copies: dict = field(default_factory=dict)

    def run(self, which: str = "a") -> Path:
        """A private copy of a trained run (commands may not touch the shared one)."""
        if which not in self._copies:
            dest = self.tmp / f"run-{which}"
            shutil.copytree(getattr(self.runs, which), dest)
            self._copies[which] = dest
        return self._copies[which]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder`, with size and mtime for files (a run's .lock may be taken: only its presence
    counts; folders count by presence, as a write check inside one touches its mtime)."""
    return {
        str(p.relative_to(folder)): (0, 0) if p.name == ".lock" or p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def run_cli(argv: list) -> int:
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def check_one_line(stderr: str, expect: list[str]) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert line.rstrip().endswith(")") and " (" in line, f"no hint (what to do) in: {line}"
    for text in expect:
        assert text in line, f"{text!r} not in: {line}"
    return line


# ---------------------------------------------------------------------------------------------------------
# bad files


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def _jpeg(path: Path, size=(12, 10), color=(200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=90)
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def _idx_with(env: Env, name: str, change: Callable[[Path], None]) -> Path:
    folder = make_idx_dir(env.tmp / name)
    change(folder)
    return folder


def wrong_magic(folder: Path) -> None:
    p = folder / "train-images-idx3-ubyte"
    data = bytearray(p.read_bytes())
    data[:4] = b"\x1f\x00\x07\x09"
    p.write_bytes(bytes(data))


def gzip_garbage(folder: Path) -> None:
    p = folder / "train-images-idx3-ubyte"
    p.unlink()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5)[:-6])


def short_labels(folder: Path) -> None:
    write_raw_idx(folder / "train-labels-idx1-ubyte", np.arange(63) % 3)


def npz(env: Env, name: str, **arrays) -> Path:
    path = env.tmp / name
    np.savez(path, **arrays)
    return path


def ragged_npz(env: Env) -> Path:
    path = env.tmp / "ragged.npz"
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.zeros((4, 4)), np.zeros((5, 5)), np.zeros((4, 4))]
    np.savez(path, x=ragged, y=np.arange(3))  # an object array: loading it would need pickle
    return path


def corrupt_compressed_npz(env: Env) -> Path:
    """A compressed npz whose deflate data is damaged: numpy raises zlib.error (not an OSError) reading it."""
    import io
    import zlib

    rng = np.random.default_rng(0)
    np.savez_compressed(buf := io.BytesIO(), x=rng.integers(0, 256, (16, 8, 8)).astype(np.uint8), y=np.arange(16) % 3)
    data = buf.getvalue()
    for pos in range(40, len(data) - 40):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        try:
            with np.load(io.BytesIO(bytes(bad))) as z:
                [z[k] for k in z.files]
        except zlib.error:
            path = env.tmp / "zlib.npz"
            path.write_bytes(bytes(bad))
            return path
        except Exception:  # noqa: BLE001 - a header byte: another error; look further
            continue
    raise AssertionError("no byte flip gave a zlib.error")


def idx_label_255(folder: Path) -> None:
    write_raw_idx(folder / "train-labels-idx1-ubyte", np.where(np.arange(64) % 3 == 2, 255, np.arange(64) % 3))


def nonimage_folder(env: Env) -> Path:
    folder = env.tmp / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "table.csv").write_text("a,b\n1,2\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "fake.png").write_text("this is not a PNG")
    return folder


def truncated_folder(env: Env) -> Path:
    folder = env.tmp / "cut"
    _truncate(_png(folder / "a.png", np.full((16, 16, 3), 90, np.uint8)), 0.4)
    _truncate(_jpeg(folder / "b.jpg", (32, 32)), 0.3)
    return folder


# ---------------------------------------------------------------------------------------------------------
# the table


@dataclass
class Case:
    id: str
    kind: str  # data: a data spec | config: train/config arguments | run: a run directory | argv: a command line
    make: Callable[[Env], tuple[object, list[str]]]  # -> (spec | args | run dir, texts the line must hold)
    commands: tuple[str, ...]
    needs: str | None = None  # a reader that must exist ('npz', 'folder')


DATA = ("data info", "train", "evaluate --data")
CONFIG = ("train", "config show")
RUN = ("sample", "train --resume", "evaluate", "classify", "plot", "report")


def _p(env: Env, rel: str) -> str:
    return str(env.tmp / rel)


CASES = [
    # missing and empty paths
    Case("missing-idx-dir", "data", lambda e: (f"idx:{_p(e, 'nope')}", [_p(e, "nope")]), DATA),
    Case("missing-npz", "data", lambda e: (f"npz:{_p(e, 'nope.npz')}", [_p(e, "nope.npz")]), DATA, "npz"),
    Case("missing-folder", "data", lambda e: (f"folder:{_p(e, 'nope')}", [_p(e, "nope")]), DATA, "folder"),
    Case("missing-bare-path", "data", lambda e: (_p(e, "nope.npz"), [_p(e, "nope.npz")]), DATA[:2]),
    Case("empty-idx-dir", "data", lambda e: (f"idx:{_made(e, 'empty')}", [_p(e, "empty")]), DATA[:2]),
    Case("empty-folder", "data", lambda e: (f"folder:{_made(e, 'empty')}", [_p(e, "empty")]), DATA[:2], "folder"),
    Case("empty-npz-file", "data", lambda e: (f"npz:{_made(e, 'e.npz', b'')}", [_p(e, "e.npz")]), DATA[:2], "npz"),
    Case("empty-spec", "data", lambda e: ("", ["spec"]), DATA[:1]),
    # image folders: nothing readable in them
    Case("only-non-image-files", "data", lambda e: (f"folder:{nonimage_folder(e)}", [_p(e, "docs")]), DATA[:2], "folder"),
    Case("only-truncated-images", "data", lambda e: (f"folder:{truncated_folder(e)}", [_p(e, "cut")]), DATA[:2], "folder"),
    # IDX
    Case("idx-truncated", "data", lambda e: (f"idx:{_idx_with(e, 'cut', lambda f: _truncate(f / 'train-images-idx3-ubyte', 0.7))}", ["train-images-idx3-ubyte", "truncated"]), DATA),
    Case("idx-wrong-magic", "data", lambda e: (f"idx:{_idx_with(e, 'magic', wrong_magic)}", ["train-images-idx3-ubyte", "magic"]), DATA),
    Case("idx-broken-gzip", "data", lambda e: (f"idx:{_idx_with(e, 'gz', gzip_garbage)}", ["train-images-idx3-ubyte.gz"]), DATA[:2]),
    Case("idx-labels-255", "data", lambda e: (f"idx:{_idx_with(e, 'l255', idx_label_255)}", ["255", "252 of 256 classes"]), DATA[:2]),
    Case("idx-labels-wrong-length", "data", lambda e: (f"idx:{_idx_with(e, 'short', short_labels)}", ["train-labels-idx1-ubyte", "63"]), DATA[:2]),
    # npz
    Case("npz-no-known-arrays", "data", lambda e: (f"npz:{npz(e, 'odd.npz', foo=np.zeros((4, 8, 8), np.uint8), bar=np.zeros(4))}", ["odd.npz", "foo"]), DATA, "npz"),
    Case("npz-corrupt-compressed", "data", lambda e: (f"npz:{corrupt_compressed_npz(e)}", ["zlib.npz"]), DATA, "npz"),
    Case("npz-ragged", "data", lambda e: (f"npz:{ragged_npz(e)}", ["ragged.npz"]), DATA[:2], "npz"),
    Case("npz-nan", "data", lambda e: (f"npz:{npz(e, 'nan.npz', x=np.full((4, 8, 8), np.nan, np.float32), y=np.arange(4))}", ["nan.npz"]), DATA[:2], "npz"),
    Case("npz-out-of-range", "data", lambda e: (f"npz:{npz(e, 'big.npz', x=np.full((4, 8, 8), 1000, np.int64), y=np.arange(4))}", ["big.npz"]), DATA[:2], "npz"),
    Case("npz-negative-floats", "data", lambda e: (f"npz:{npz(e, 'neg.npz', x=np.full((4, 8, 8), -3.0, np.float32), y=np.arange(4))}", ["neg.npz"]), DATA[:2], "npz"),
    Case("npz-labels-wrong-length", "data", lambda e: (f"npz:{npz(e, 'lab.npz', x=np.zeros((4, 8, 8), np.uint8), y=np.arange(3))}", ["lab.npz"]), DATA[:2], "npz"),
    Case("npz-fractional-labels", "data", lambda e: (f"npz:{npz(e, 'fl.npz', x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4) / 3)}", ["fl.npz"]), DATA[:2], "npz"),
    # config keys and values
    Case("unknown-key", "config", lambda e: (["model.latnt_dim=2"], ["model.latnt_dim", "did you mean 'model.latent_dim'"]), CONFIG),
    Case("unknown-section-in-file", "config", lambda e: ([_yaml(e, "modle:\n  latent_dim: 2\n")], ["c.yaml", "modle", "'model'"]), CONFIG),
    Case("unknown-key-in-file", "config", lambda e: ([_yaml(e, "train:\n  epoch: 2\n")], ["c.yaml", "train.epoch", "'train.epochs'"]), CONFIG),
    Case("override-without-value", "config", lambda e: (["model.latent_dim"], ["model.latent_dim", "=VALUE"]), CONFIG),
    Case("override-without-key", "config", lambda e: (["=3"], ["'=3'"]), CONFIG),
    Case("override-bad-key", "config", lambda e: (["model..beta=1"], ["model..beta=1"]), CONFIG),
    Case("override-wrong-type", "config", lambda e: (["model.latent_dim=two"], ["model.latent_dim", "'two'"]), CONFIG),
    Case("negative-lr", "config", lambda e: (["train.lr=-0.001"], ["train.lr", "-0.001"]), CONFIG),
    Case("nan-lr", "config", lambda e: (["train.lr=.nan"], ["train.lr", "nan"]), CONFIG),
    Case("negative-beta", "config", lambda e: (["model.beta=-1"], ["model.beta", "-1"]), CONFIG),
    Case("batch-size-0", "config", lambda e: (["train.batch_size=0"], ["train.batch_size", "0"]), CONFIG),
    Case("bad-choice", "config", lambda e: (["model.arch=transformer"], ["model.arch", "transformer", "conv"]), CONFIG),
    Case("latent-dim-absurd", "config", lambda e: (["model.latent_dim=100000000000"], ["model.latent_dim", "100000000000", "65,536"]), CONFIG),
    Case("image-size-absurd", "config", lambda e: (["data.image_size=10000"], ["data.image_size", "10000", "4,096"]), CONFIG),
    Case("hidden-absurd", "config", lambda e: (["model.hidden=[10000000]"], ["model.hidden", "65,536"]), CONFIG),
    Case("epochs-0", "config", lambda e: (["train.epochs=0"], ["train.epochs", "0", ">= 1"]), CONFIG),
    Case("image-size-too-small", "config", lambda e: (["data.image_size=4"], ["data.image_size", "4"]), CONFIG),
    Case("image-size-the-arch-cannot-take", "config", lambda e: ([f"data.source=idx:{e.runs.idx}", "model.arch=conv", "model.conv_channels=[4,4,4,4,4]"], ["image_size 8", "model.conv_channels"]), ("train",)),
    Case("config-file-missing", "config", lambda e: ([_p(e, "nope.yaml")], [_p(e, "nope.yaml")]), CONFIG),
    Case("config-not-yaml", "config", lambda e: ([_yaml(e, "model: [\n  latent_dim: 2\n")], ["c.yaml", "line"]), CONFIG),
    Case("config-python-tag", "config", lambda e: ([_yaml(e, f"name: !!python/object/apply:os.system ['touch {_p(e, 'PWNED')}']\n")], ["c.yaml", "tag"]), CONFIG),
    Case("config-not-a-mapping", "config", lambda e: ([_yaml(e, "- 1\n- 2\n")], ["c.yaml"]), CONFIG),
    Case("config-binary", "config", lambda e: ([_yaml(e, b"\xff\xfe\x00garbage")], ["c.yaml"]), CONFIG),
    # the command line itself
    Case("unknown-option", "argv", lambda e: (["train", "--epochs", "5"], ["--epochs", "vaelab train --help"]), ("train",)),
    Case("option-not-a-number", "argv", lambda e: (["sample", e.run("a"), "-n", "abc"], ["'-n'"]), ("sample",)),
    Case("unknown-command", "argv", lambda e: (["trian"], ["trian"]), ("train",)),
    Case("data-info-image-size-3", "argv", lambda e: (["data", "info", f"idx:{e.runs.idx}", "--image-size", "3"], ["image_size is 3", "8 to 4096"]), ("data info",)),
    Case("data-info-image-size-10000", "argv", lambda e: (["data", "info", f"idx:{e.runs.idx}", "--image-size", "10000"], ["image_size is 10000"]), ("data info",)),
    Case("sample-absurd-n", "argv", lambda e: (["sample", e.run("a"), "-n", "100000000", "--out", e.tmp / "s.png"], ["-n 100,000,000", "PNG", "at most about"]), ("sample",)),
    Case("checkpoint-not-a-checkpoint", "argv", lambda e: (["evaluate", e.run("a"), "--checkpoint", _made(e, "passwd", b"root:x:0:0:root:/root:/bin/bash\n")], [_p(e, "passwd"), "not a checkpoint file"]), ("evaluate",)),
    Case("checkpoint-unknown-name", "argv", lambda e: (["evaluate", e.run("a"), "--checkpoint", "bset"], ["'bset'", "best, last"]), ("evaluate",)),
    Case("missing-argument", "argv", lambda e: (["data", "info"], ["spec"]), ("data info",)),
    # run directories
    Case("run-dir-missing", "run", lambda e: (_p(e, "nope"), [_p(e, "nope")]), RUN),
    Case("run-dir-not-a-run", "run", lambda e: (_not_a_run(e), [_p(e, "photos")]), RUN),
    Case("run-dir-is-a-file", "run", lambda e: (_made(e, "f.txt", b"x"), [_p(e, "f.txt")]), RUN),
    Case("checkpoint-of-another-model", "run", lambda e: (_swap_checkpoints(e), [_p(e, "run-a")]), RUN),
    Case("truncated-checkpoints", "run", lambda e: (_truncated_checkpoints(e), [_p(e, "run-a"), "checkpoint"]), RUN),
    Case("no-checkpoint-yet", "run", lambda e: (_no_checkpoints(e), [_p(e, "run-a")]), RUN),
]


def _made(env: Env, rel: str, content: bytes | None = None) -> str:
    """An empty folder (content None) or a file with `content`, under the case's folder."""
    p = env.tmp / rel
    p.mkdir() if content is None else p.write_bytes(content)
    return str(p)


def _yaml(env: Env, text: str | bytes) -> str:
    p = env.tmp / "c.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


def _not_a_run(env: Env) -> str:
    folder = env.tmp / "photos"
    _jpeg(folder / "cat.jpg")
    (folder / "notes.txt").write_text("my holiday")
    return str(folder)


def _swap_checkpoints(env: Env) -> str:
    run = env.run("a")
    for name in ("last", "best"):
        shutil.copy(env.runs.b / "checkpoints" / f"{name}.ckpt", run / "checkpoints" / f"{name}.ckpt")
    return str(run)


def _truncated_checkpoints(env: Env) -> str:
    run = env.run("a")
    for name in ("last", "best"):
        _truncate(run / "checkpoints" / f"{name}.ckpt", 0.5)
    return str(run)


def _no_checkpoints(env: Env) -> str:
    run = env.run("a")
    shutil.rmtree(run / "checkpoints")
    return str(run)


def build_argv(case: Case, command: str, target, env: Env) -> list:
    if case.kind == "argv":
        return target
    if case.kind == "data":
        if command == "data info":
            return ["data", "info", target]
        if command == "train":
            return ["train", f"data.source={target}", *TINY_MODEL, f"out_dir={env.tmp / 'runs'}", "-q"]
        return ["evaluate", env.run("a"), "--data", target]
    if case.kind == "config":
        if command == "config show":
            return ["config", "show", *target]
        return ["train", *target, f"out_dir={env.tmp / 'runs'}", "-q"]
    return {
        "sample": ["sample", target, "--out", env.tmp / "samples.png"],
        "train --resume": ["train", "--resume", target, "-q"],
        "evaluate": ["evaluate", target],
        "classify": ["classify", target, "--method", "gmm"],
        "plot": ["plot", target],
        "report": ["report", target],
    }[command]


ROWS = [pytest.param(case, command, id=f"{case.id}[{command}]") for case in CASES for command in case.commands]


@pytest.mark.parametrize(("case", "command"), ROWS)
def test_bad_input_gets_one_line(case: Case, command: str, tmp_path, runs, capfd, monkeypatch):
    monkeypatch.delenv("VAELAB_DEBUG", raising=False)
    name = command.replace(" --data", "").replace(" --resume", "")
    if not registered(name):
        pytest.skip(f"'vaelab {name}' is not in this branch yet")
    if case.needs and not reader_present(case.needs):
        pytest.skip(f"the {case.needs} reader is not in this branch yet")
    env = Env(tmp_path, runs)
    target, expect = case.make(env)
    argv = build_argv(case, command, target, env)
    before = snapshot(tmp_path)
    capfd.readouterr()
    code = run_cli(argv)
    err = capfd.readouterr().err
    assert code == 2, f"exit code {code}: {err}"
    check_one_line(err, expect)
    assert snapshot(tmp_path) == before, "the failed command left files behind or changed some"
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "argv, expect",
    [
        (lambda t: ["data", "info", f"idx:{t / 'nope'}"], str(Path("nope"))),
        (lambda t: ["train", "model.latnt_dim=2", f"out_dir={t / 'runs'}"], "did you mean 'model.latent_dim'"),
        (lambda t: ["sample", t, "--out", t / "s.png"], "is not a vaelab run"),
    ],
    ids=["data-info", "train", "sample"],
)
def test_bad_input_through_python_m_vaelab(tmp_path, argv, expect):
    """The real entry point, in its own process: the same one line and exit code 2."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("VAELAB_DEBUG", None)
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "vaelab", *map(str, argv(tmp_path))], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    check_one_line(proc.stderr, [expect])
    assert snapshot(tmp_path) == before


def test_debug_env_shows_the_traceback(tmp_path, monkeypatch):
    from vaelab.errors import VaelabError

    monkeypatch.setenv("VAELAB_DEBUG", "1")
    with pytest.raises(VaelabError, match="does not exist"):
        main(["data", "info", f"idx:{tmp_path / 'nope'}"])


def test_sample_bad_options_write_nothing(tmp_path, runs, capfd):
    env = Env(tmp_path, runs)
    run = env.run("a")
    before = snapshot(tmp_path)
    for argv, text in (
        (["sample", run, "-n", "0", "--out", tmp_path / "s.png"], "-n is 0"),
        (["sample", run, "--label", "1", "--out", tmp_path / "s.png"], "not a conditional model"),
    ):
        capfd.readouterr()
        assert run_cli(argv) == 2
        check_one_line(capfd.readouterr().err, [text])
    assert snapshot(tmp_path) == before


def test_classifier_of_another_run_is_refused(tmp_path, runs, capfd):
    """A classifier saved by run A, copied into run C (same model shape, other weights), must not be used."""
    for command in ("classify", "predict"):
        if not registered(command):
            pytest.skip(f"'vaelab {command}' is not in this branch yet")
    env = Env(tmp_path, runs)
    a, c = env.run("a"), env.run("c")
    assert run_cli(["classify", a, "--method", "gmm"]) == 0, capfd.readouterr().err
    shutil.rmtree(c / "classify", ignore_errors=True)
    shutil.copytree(a / "classify", c / "classify")
    before = snapshot(tmp_path)
    capfd.readouterr()
    code = run_cli(["predict", c, "--data", f"idx:{runs.idx}"])
    err = capfd.readouterr().err
    assert code == 2, err
    check_one_line(err, [str(c / "classify")])
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------------------
# inputs that look odd but are fine: they load, with the right values


@pytest.fixture
def folder_reader():
    if not reader_present("folder"):
        pytest.skip("the folder reader is not in this branch yet")
    from vaelab.data import load

    return load


def test_16bit_png_loads_scaled_to_8_bits(tmp_path, folder_reader):
    values = np.array([[0, 25700, 65535, 32896]] * 4, np.uint16)  # 0, 100, 255, 128 in 8 bits
    _png(tmp_path / "img" / "deep.png", values)
    ds = folder_reader(f"folder:{tmp_path / 'img'}", channels=1, val_fraction=0.0)
    row = ds.images[0, 0, 0].tolist()
    assert ds.shape == (1, 4, 4) and all(abs(a - b) <= 1 for a, b in zip(row, [0, 100, 255, 128], strict=True)), row


def test_palette_png_loads_its_colours(tmp_path, folder_reader):
    from PIL import Image

    idx = np.array([[0, 1], [2, 1]], np.uint8).repeat(4, 0).repeat(4, 1)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([255, 0, 0, 0, 128, 0, 10, 20, 250] + [0] * (256 * 3 - 9))
    (tmp_path / "img").mkdir()
    img.save(tmp_path / "img" / "pal.png")
    ds = folder_reader(f"folder:{tmp_path / 'img'}", channels=3, val_fraction=0.0)
    x = ds.images[0]  # (3, 8, 8)
    assert x[:, 0, 0].tolist() == [255, 0, 0] and x[:, 0, 7].tolist() == [0, 128, 0] and x[:, 7, 0].tolist() == [10, 20, 250]


def test_cmyk_jpeg_loads_as_rgb(tmp_path, folder_reader):
    from PIL import Image

    (tmp_path / "img").mkdir()
    path = tmp_path / "img" / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    ds = folder_reader(f"folder:{tmp_path / 'img'}", channels=3, val_fraction=0.0)
    mean = ds.images[0].float().mean(dim=(1, 2)).tolist()
    want = np.asarray(Image.open(path).convert("RGB"), np.float64).mean(axis=(0, 1)).tolist()
    assert all(abs(a - b) <= 3 for a, b in zip(mean, want, strict=True)), (mean, want)
    assert mean[0] > 200 and mean[1] < 60 and mean[2] < 60  # red, not its CMYK inverse


def test_mixed_sizes_and_modes_load_with_image_size(tmp_path, folder_reader):
    from PIL import Image

    folder = tmp_path / "mixed"
    _png(folder / "rgb.png", np.full((10, 14, 3), 200, np.uint8))
    _png(folder / "gray.png", np.full((16, 16), 50, np.uint8))
    _png(folder / "rgba.png", np.full((12, 20, 4), 120, np.uint8))
    _png(folder / "la.png", np.full((11, 11, 2), 80, np.uint8), mode="LA")
    Image.new("P", (9, 9), 3).save(folder / "pal.gif")
    _jpeg(folder / "photo.jpg", (30, 18), (10, 200, 10))
    for channels in (1, 3):
        ds = folder_reader(f"folder:{folder}", image_size=8, channels=channels, val_fraction=0.0)
        assert len(ds) == 6 and ds.shape == (channels, 8, 8)
    flat = {int(v) for v in folder_reader(f"folder:{folder}", image_size=8, channels=1, val_fraction=0.0).images.flatten()}
    assert 50 in flat and 200 in flat  # uniform images keep their grey level through resizing


def test_bad_files_in_a_folder_are_skipped_and_named(tmp_path, folder_reader, capfd):
    folder = tmp_path / "scraped"
    _png(folder / "good1.png", np.full((8, 8, 3), 10, np.uint8))
    _jpeg(folder / "good2.jpg", (8, 8))
    _truncate(_png(folder / "cut.png", np.full((32, 32, 3), 90, np.uint8)), 0.4)
    _truncate(_jpeg(folder / "cut.jpg", (32, 32)), 0.3)
    (folder / "notes.txt").write_text("hello")
    (folder / "fake.png").write_text("not a PNG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = folder_reader(f"folder:{folder}", image_size=8, channels=3, val_fraction=0.0)
    assert len(ds) == 2
    said = capfd.readouterr().err + " ".join(str(w.message) for w in caught)
    for name in ("cut.png", "cut.jpg", "fake.png"):
        assert name in said, f"{name} was skipped silently: {said!r}"


def test_dark_float_npz_pixels_get_a_one_line_warning(tmp_path, capfd):
    """Float pixels in 0..7 are read on the 0..255 scale (nearly black): said in one line (issue 27, item 5)."""
    path = tmp_path / "dark.npz"
    np.savez(path, x=np.linspace(0, 7, 4 * 64, dtype=np.float32).reshape(4, 8, 8), y=np.arange(4) % 2)
    capfd.readouterr()
    assert run_cli(["data", "info", f"npz:{path}"]) == 0
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "0 to 7" in lines[0] and "divided by 7" in lines[0], lines
    for fine in (np.linspace(0, 1, 256), np.linspace(0, 255, 256)):  # 0..1 and 0..255 floats: no warning
        np.savez(path, x=fine.astype(np.float32).reshape(4, 8, 8), y=np.arange(4) % 2)
        assert run_cli(["data", "info", f"npz:{path}"]) == 0
        assert "warning" not in capfd.readouterr().err


def test_emnist_named_idx_files_are_read_upright(tmp_path):
    """EMNIST stores its images transposed; files named emnist-<split>-* read through idx:DIR are flipped
    back like the named source, and letters get their class names (labels 1..26) (issue 27, item 3)."""
    from vaelab.data import load

    upright = np.zeros((6, 8, 8), np.uint8)
    upright[:, 0, :] = 255  # a bar along the top row
    labels = np.array([1, 2, 3, 1, 2, 3])
    folder = tmp_path / "emnist"
    folder.mkdir()
    for split in ("train", "test"):
        write_raw_idx(folder / f"emnist-letters-{split}-images-idx3-ubyte", upright.transpose(0, 2, 1))  # as EMNIST stores it
        write_raw_idx(folder / f"emnist-letters-{split}-labels-idx1-ubyte", labels)
    ds = load(f"idx:{folder}", val_fraction=0.0)
    assert (ds.images[:, 0, 0, :] == 255).all() and (ds.images[:, 0, 1:, :] == 0).all()
    assert ds.class_names[:3] == ["A", "B", "C"] and ds.labels[:3].tolist() == [0, 1, 2]
    plain = tmp_path / "plain"  # the same bytes under MNIST names: read as stored
    plain.mkdir()
    write_raw_idx(plain / "train-images-idx3-ubyte", upright.transpose(0, 2, 1))
    assert (load(f"idx:{plain}", val_fraction=0.0).images[:, 0, :, 0] == 255).all()


def test_predict_refuses_a_decompression_bomb_in_one_line(tmp_path, runs, capfd, monkeypatch):
    """Issue 27, item 8: an image over Pillow's pixel limit (a 20000 x 20000 PNG; here the limit is lowered)."""
    from PIL import Image

    env = Env(tmp_path, runs)
    run = env.run("a")
    assert run_cli(["classify", run, "--method", "gmm"]) == 0
    bomb = _png(tmp_path / "bomb.png", np.zeros((300, 300), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 90,000 px is over twice the limit: an error
    before = snapshot(tmp_path)
    capfd.readouterr()
    assert run_cli(["predict", run, bomb]) == 2
    check_one_line(capfd.readouterr().err, [str(bomb), "too large"])
    assert snapshot(tmp_path) == before


def test_sizes_beyond_the_memory_are_refused_with_the_figure(tmp_path, runs, capfd, monkeypatch):
    """Issue 27, item 10: a resize or a model estimated above the memory available is refused before allocating."""
    from vaelab.data import budget as memory

    folder = tmp_path / "pngs"
    for i in range(18):
        _png(folder / f"{i}.png", np.full((10, 10), 10 * i, np.uint8))
    monkeypatch.setattr(memory, "available_memory", lambda: 100 * 10**6)
    monkeypatch.setenv("VAELAB_NO_CACHE", "1")  # decoded into RAM (the mapped cache is on disk: no RAM limit there)
    before = snapshot(tmp_path)
    cases = [
        (["data", "info", f"folder:{folder}", "--image-size", "4096"], ["18 images of 4096 x 4096", "302.0 MB", "100.0 MB"]),
        (["data", "info", f"idx:{runs.idx}", "--image-size", "4000"], ["80 images of 4000 x 4000", "1.3 GB"]),
        (["train", f"data.source=idx:{runs.idx}", "model.hidden=[60000,60000]", f"out_dir={tmp_path / 'runs'}", "-q"], ["MLP", "GB of memory", "model.hidden"]),
    ]
    for argv, expect in cases:
        capfd.readouterr()
        assert run_cli(argv) == 2, argv
        check_one_line(capfd.readouterr().err, expect)
    assert snapshot(tmp_path) == before


def test_sample_draws_in_chunks_with_progress(tmp_path, runs, capfd, monkeypatch):
    """Issue 27, item 10: a large -n is decoded chunk by chunk, each chunk reported."""
    from PIL import Image

    from vaelab.cli import train as train_cli

    monkeypatch.setattr(train_cli, "SAMPLE_CHUNK", 10)
    out = tmp_path / "s.png"
    assert run_cli(["sample", Env(tmp_path, runs).run("a"), "-n", "25", "--nrow", "5", "--out", out]) == 0
    said = capfd.readouterr().out
    assert "sampled 10 / 25" in said and "sampled 25 / 25" in said
    with Image.open(out) as im:  # 5 x 5 images of 8 px with 2 px padding, doubled
        assert im.size == (2 * (5 * 10 + 2), 2 * (5 * 10 + 2))


def test_warnings_print_as_one_line_each(tmp_path):
    """A library warning reaches the terminal as one 'warning: ...' line, not Python's file:line plus source."""
    path = tmp_path / "dark.npz"
    np.savez(path, x=np.linspace(0, 7, 32 * 64, dtype=np.float32).reshape(32, 8, 8), y=np.arange(32) % 2)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = ["train", f"data.source=npz:{path}", *TINY_MODEL, f"out_dir={tmp_path / 'runs'}", "-q"]
    proc = subprocess.run([sys.executable, "-m", "vaelab", *argv], env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 0, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "0 to 7" in lines[0], proc.stderr
