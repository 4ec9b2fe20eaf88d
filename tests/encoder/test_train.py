"""The codec's training loop: schedule, a short CPU run, resuming, and continuing from weights.

Runs the real loop (data generated from the committed synth fixture, the ``test`` preset,
Tiny pages only) for a handful of steps, so it proves the plumbing, not the learning.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from opticmem.encoder import synth
from opticmem.encoder.bundled import BUNDLED_TOKENIZER, StepOutput, special_ids, training_step
from opticmem.encoder.checkpoint import load_tensors, read_index
from opticmem.encoder.config import preset
from opticmem.encoder.errors import InputError
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.train import (
    BATCH_PAGES,
    MAX_WORKERS,
    PageBatches,
    TrainConfig,
    compile_decoder,
    compile_vision,
    learning_rate,
    make_optimizer,
    parse_tier_mix,
    save_training_state,
    scaled_batches,
    train,
    update,
    use_moe_dispatch,
)
from opticmem.render import RenderSettings

FIXTURE = Path(__file__).parent / "fixtures" / "synth"


def test_learning_rate_warms_up_then_follows_its_cosine_phase(tmp_path: Path) -> None:
    cfg = TrainConfig(out_dir=tmp_path, peak_lr=1e-3, min_lr_ratio=0.1, warmup_steps=10,
                      total_minutes=20.0)
    floor = 1e-4
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 9, 0.0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50, 10.0) == pytest.approx(floor + (1e-3 - floor) / 2)
    assert learning_rate(cfg, 50, 30.0) == pytest.approx(floor)
    restart = TrainConfig(out_dir=tmp_path, peak_lr=3e-4, min_lr_ratio=0.1, warmup_steps=10,
                          total_minutes=20.0, phase_start=96.0)
    assert learning_rate(restart, 5000, 96.0) == pytest.approx(3e-4)
    mid = 3e-5 + (3e-4 - 3e-5) * 0.5 * (1 + math.cos(math.pi / 4))
    assert learning_rate(restart, 5000, 101.0) == pytest.approx(mid)
    assert learning_rate(restart, 5000, 116.0) == pytest.approx(3e-5)
    assert learning_rate(restart, 5000, 50.0) == pytest.approx(3e-4)  # before the phase


def test_tier_mix_parses_tier_weights_and_refuses_what_training_cannot_draw() -> None:
    assert parse_tier_mix("large=0.1, base=0.1,Small=0.5,tiny=0.3") == {
        "large": 0.1, "base": 0.1, "small": 0.5, "tiny": 0.3}
    assert parse_tier_mix("small=1,tiny=2") == {"large": 0.0, "base": 0.0, "small": 1.0,
                                                "tiny": 2.0}
    assert parse_tier_mix("tiny=1", tiers_per_page=1)["tiny"] == 1.0
    for bad, says in [("huge=1,small=1", "TIER one of large, base, small, tiny"),
                      ("small,tiny=1", "TIER=WEIGHT"), ("small=x,tiny=1", "not a number"),
                      ("small=-1,tiny=1", "≥ 0"), ("small=nan,tiny=1", "≥ 0"),
                      ("small=inf,tiny=1", "finite"), ("small=1", "at least 2 tiers"),
                      ("", "at least 2 tiers")]:
        with pytest.raises(InputError, match=says):
            parse_tier_mix(bad)


def test_batch_scale_multiplies_every_tier_and_refuses_what_is_not_a_size() -> None:
    assert scaled_batches(1.0) == BATCH_PAGES
    assert scaled_batches(2.0) == {t: 2 * n for t, n in BATCH_PAGES.items()}
    assert scaled_batches(0.001) == dict.fromkeys(BATCH_PAGES, 1)  # never an empty step
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InputError, match="batch scale"):
            scaled_batches(bad)


@pytest.fixture
def recorded_train(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """The configs ``opticmem train`` hands to ``train``, which is replaced by a recorder."""
    import opticmem.encoder.train as train_module

    seen: list[TrainConfig] = []

    def record(cfg: TrainConfig) -> dict[str, object]:
        seen.append(cfg)
        return {"step": 0, "pages": 0, "minutes": 0.0, "runs": 1, "log": []}

    monkeypatch.setattr(train_module, "train", record)
    return seen


def test_train_command_passes_the_batch_scale_and_moe_dispatch_and_refuses_bad_ones(
    tmp_path: Path, recorded_train: list[TrainConfig]
) -> None:
    from typer.testing import CliRunner

    from opticmem.cli import app

    seen = recorded_train
    run = ["train", "--out", str(tmp_path / "run")]
    ok = CliRunner().invoke(app, [*run, "--batch-scale", "2", "--moe-dispatch", "dense"])
    assert ok.exit_code == 0, ok.output
    assert seen[0].batch_pages == {t: 2 * n for t, n in BATCH_PAGES.items()}
    assert seen[0].moe_dispatch == "dense"
    bad = CliRunner().invoke(app, [*run, "--batch-scale", "0"])
    assert bad.exit_code == 2 and "--batch-scale" in bad.output
    bad = CliRunner().invoke(app, [*run, "--moe-dispatch", "sorted"])
    assert bad.exit_code == 2 and "--moe-dispatch" in bad.output and "grouped" in bad.output
    assert len(seen) == 1
    with pytest.raises(InputError, match="moe_dispatch"):  # the library refuses it too
        train(TrainConfig(out_dir=tmp_path / "lib", moe_dispatch="sorted"))  # type: ignore[arg-type]
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_train_refuses_a_seed_its_generators_cannot_take(tmp_path: Path, seed: object) -> None:
    # A negative seed failed only in the data loader (numpy's ValueError), after the run
    # directory and the model were made.
    with pytest.raises(InputError, match="seed must be"):
        train(TrainConfig(out_dir=tmp_path / "lib", seed=seed))  # type: ignore[arg-type]
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("workers", [-1, MAX_WORKERS + 1, 10**9, 1.5, True])
def test_train_refuses_a_worker_count_no_machine_can_run(
        tmp_path: Path, workers: object) -> None:
    # a billion workers went straight to the data loader, which started processes until
    # the machine ran out of memory; -1 failed in torch after the model was built
    with pytest.raises(InputError, match=f"workers must be a whole number in 0 … {MAX_WORKERS}"):
        train(TrainConfig(out_dir=tmp_path / "lib", workers=workers))  # type: ignore[arg-type]
    assert not (tmp_path / "lib").exists()


def test_train_command_bounds_workers_as_the_library_does(
    tmp_path: Path, recorded_train: list[TrainConfig]
) -> None:
    from typer.testing import CliRunner

    from opticmem.cli import app

    args = ["train", "--preset", "test", "--out", str(tmp_path / "run"), "--json"]
    result = CliRunner().invoke(app, [*args, "--workers", "1000000000"])
    assert result.exit_code == 2 and not recorded_train, result.output
    assert "--workers" in result.output and not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, [*args, "--workers", str(MAX_WORKERS)])
    assert result.exit_code == 0 and recorded_train[-1].workers == MAX_WORKERS, result.output


@pytest.mark.parametrize(("field", "value"), [
    ("minutes", float("inf")), ("minutes", float("nan")), ("minutes", 0),
    ("total_minutes", float("inf")), ("total_minutes", -1.0), ("checkpoint_minutes", 0.0),
    ("phase_start", -5.0), ("phase_start", float("nan")), ("minutes", True),
    ("peak_lr", float("inf")), ("peak_lr", float("nan")), ("peak_lr", 0.0),
])
def test_train_refuses_minutes_it_could_never_finish(
        tmp_path: Path, field: str, value: object) -> None:
    # --minutes inf trained for ever (NaN too: it compares false with every stop)
    with pytest.raises(InputError, match=f"{field} must be a finite number"):
        train(TrainConfig(out_dir=tmp_path / "lib", **{field: value}))  # type: ignore[arg-type]
    assert not (tmp_path / "lib").exists()


def test_compiling_the_vision_stage_keeps_the_parameter_names_checkpoints_use() -> None:
    model = build_model(preset("test"), device="cpu", seed=1)
    names = list(model.state_dict())
    compile_vision(model)  # nothing compiles until a forward: this only wraps the call
    assert list(model.state_dict()) == names
    compile_decoder(model, length_bucket=128)
    assert list(model.state_dict()) == names
    with pytest.raises(InputError, match="length bucket"):
        compile_decoder(model, length_bucket=0)


def test_train_command_passes_length_buckets_and_decoder_compiling_and_refuses_bad_ones(
    tmp_path: Path, recorded_train: list[TrainConfig]
) -> None:
    from typer.testing import CliRunner

    from opticmem.cli import app

    seen = recorded_train
    run = ["train", "--out", str(tmp_path / "run")]
    ok = CliRunner().invoke(app, [*run, "--length-bucket", "128", "--compile-decoder",
                                  "--moe-dispatch", "dense"])
    assert ok.exit_code == 0, ok.output
    assert (seen[0].length_bucket, seen[0].compile_decoder) == (128, True)
    ok = CliRunner().invoke(app, run)
    assert ok.exit_code == 0, ok.output
    assert (seen[1].length_bucket, seen[1].compile_decoder) == (0, False)  # off by default
    for args, says in [(["--compile-decoder", "--moe-dispatch", "dense"], "--length-bucket"),
                       (["--compile-decoder", "--length-bucket", "64"], "dense"),
                       (["--length-bucket", "-1"], "--length-bucket")]:
        bad = CliRunner().invoke(app, [*run, *args])
        assert bad.exit_code == 2 and says in bad.output, bad.output
    assert len(seen) == 2
    for kw in ({"compile_decoder": True, "moe_dispatch": "dense"},  # the library refuses too
               {"compile_decoder": True, "length_bucket": 64},
               {"length_bucket": -1}):
        with pytest.raises(InputError, match="length_bucket"):
            train(TrainConfig(out_dir=tmp_path / "lib", **kw))  # type: ignore[arg-type]
    assert not (tmp_path / "lib").exists()


def test_train_command_refuses_a_bad_tier_mix_before_training(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from opticmem.cli import app

    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"),
                                      "--tier-mix", "small=1,huge=1"])
    assert result.exit_code == 2
    assert "--tier-mix" in result.output and "huge=1" in result.output
    assert not (tmp_path / "run").exists()


def test_train_command_refuses_an_export_path_that_is_a_file_before_training(
    tmp_path: Path, recorded_train: list[TrainConfig]
) -> None:
    """It used to train for the whole call, then fail writing the weights (a
    FileExistsError traceback)."""
    from typer.testing import CliRunner

    from opticmem.cli import app

    export = tmp_path / "weights.safetensors"
    export.write_bytes(b"not a folder")
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"),
                                      "--export", str(export)])
    assert result.exit_code == 2, result.output
    assert "--export" in result.output and "not a directory" in result.output
    assert recorded_train == []
    assert not (tmp_path / "run").exists()


def _config(out: Path, steps: int, **kw: object) -> TrainConfig:
    settings: dict[str, object] = dict(
        out_dir=out, preset="test", device="cpu", workers=0, minutes=5.0, max_steps=steps,
        batch_pages={"large": 1, "base": 1, "small": 1, "tiny": 2},
        tier_weights={"large": 0.0, "base": 0.0, "small": 0.0, "tiny": 1.0},
        tiers_per_page=1, log_every=1, gap_every=2, warmup_steps=2, rewarm_steps=2,
    )
    return TrainConfig(**{**settings, **kw})  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.parametrize("moe_dispatch", ["grouped", "dense"])
def test_training_on_cuda_logs_the_peak_gpu_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moe_dispatch: str
) -> None:
    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    progress = train(_config(tmp_path / "run", 2, device="cuda", compile=False,
                             moe_dispatch=moe_dispatch))
    assert [r["step"] for r in progress["log"]] == [1, 2]
    assert all(r["peak_gib"] > 0 for r in progress["log"])


def test_training_runs_checkpoints_resumes_and_continues_from_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    out = tmp_path / "run"
    first = train(_config(out, 2, pseudo_word_rate=0.3, pseudo_symbol_rate=0.2))
    assert (first["step"], first["pages"], first["runs"]) == (2, 4, 1)
    assert [r["step"] for r in first["log"]] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["tier"] == "tiny" for r in first["log"])
    assert "blank_loss" in first["log"][1]
    # With no workers the trainer generates its own pages: it waits on the loader a share
    # of each window, which must be a share.
    assert all(0.0 < r["data_wait"] < 1.0 for r in first["log"])
    assert all("peak_gib" not in r for r in first["log"])  # a GPU figure only
    state = out / "state"
    assert json.loads((state / "progress.json").read_text())["step"] == 2
    assert sorted(state.glob("optimizer-*.safetensors"))

    resumed = train(_config(out, 4))
    assert (resumed["step"], resumed["runs"]) == (4, 2)
    assert [r["step"] for r in resumed["log"]] == [1, 2, 3, 4]

    # A fresh machine: exported weights plus their record, a fresh optimiser.
    weights = tmp_path / "weights"
    shutil.copytree(state / "model", weights)
    shutil.copy(state / "progress.json", weights / "progress.json")
    loaded = train(_config(tmp_path / "loaded", 4, init_from=weights))
    assert (loaded["step"], loaded["runs"]) == (4, 3)  # nothing left to do: saved as loaded
    a = build_model(preset("test"), device="cpu", seed=7)
    b = build_model(preset("test"), device="cpu", seed=8)
    load_tensors(a, weights, read_index(weights)[0])
    saved = tmp_path / "loaded" / "state" / "model"
    load_tensors(b, saved, read_index(saved)[0])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))
    # Continued with the MoE layers' dense training path, which never waits for a GPU.
    cont = train(_config(tmp_path / "cont", 5, init_from=weights, peak_lr=1e-3,
                         moe_dispatch="dense"))
    assert cont["step"] == 5 and math.isfinite(cont["log"][-1]["loss"])
    assert cont["log"][-1]["lr"] == pytest.approx(1e-3 / 2, rel=0.02)  # re-warm step 1 of 2


def test_training_continues_from_grown_int8_weights_at_their_own_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled codec ships int8 and may be grown (encoder.grow) past its preset's
    sizes: training from such weights builds the model their config describes."""
    from opticmem.encoder.bundled import export_bundled
    from opticmem.encoder.checkpoint import load_checkpoint, save_checkpoint
    from opticmem.encoder.grow import grow

    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    small = build_model(preset("test"), device="cpu", seed=3)
    save_checkpoint(grow(small, decoder_layers=3, reader_points=2, reader_hidden=8),
                    tmp_path / "grown")
    plain = export_bundled(tmp_path / "grown", tmp_path / "plain")  # bf16, as shipped
    assert "quantization" not in read_index(plain)[1]
    weights = export_bundled(tmp_path / "grown", tmp_path / "weights", quantize="int8")
    assert json.loads((weights / "model.safetensors.index.json").read_text())[
        "metadata"]["quantization"]["format"] == "int8-rowwise"
    run = train(_config(tmp_path / "run", 1, init_from=weights))
    assert run["step"] == 1 and math.isfinite(run["log"][-1]["loss"])
    trained = load_checkpoint(tmp_path / "run" / "state" / "model", device="cpu")
    assert trained.cfg.decoder.layers == 3 and trained.aligner is not None
    assert trained.aligner.reader is not None


@pytest.mark.slow
def test_a_compiled_decoder_trains_as_the_eager_one_and_checkpoints_plain_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One update through compiled decoder layers gives the eager losses and gradients
    (fp32, CPU inductor: within 1e-5 relative for the losses, 1e-4 of each gradient's
    largest magnitude); its checkpoint loads into an uncompiled model under the same names;
    and the loop runs with it, the blank-page loss included. Compiles one shape (~30 s)."""
    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    cfg = _config(tmp_path / "run", 2, moe_dispatch="dense", length_bucket=2048,
                  compile_decoder=True, grad_clip=math.inf)
    batch = next(iter(PageBatches(cfg, BUNDLED_TOKENIZER, special_ids(preset("test").decoder),
                                  run_index=0)))
    assert batch["input_ids"].shape == (2, 2048)
    eager, compiled = (build_model(preset("test"), device="cpu", seed=3).train()
                       for _ in range(2))
    names = list(eager.state_dict())
    compile_decoder(compiled, cfg.length_bucket)
    results = []
    for model in (eager, compiled):
        use_moe_dispatch(model, "dense")
        opt = make_optimizer(model, cfg, torch.device("cpu"))

        def step(b: dict[str, torch.Tensor], m: OCRModel = model) -> StepOutput:
            return training_step(m, b, RenderSettings())

        done = update(model, opt, batch, step, cfg)
        losses = {"main": done.loss, "readout": done.readout_loss,
                  "aux": model.decoder.aux_loss()}
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((losses, grads))
    (want_losses, want_grads), (losses, grads) = results
    for name, value in want_losses.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=0, msg=name)
    assert grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-4 * scale, msg=name)

    save_training_state(tmp_path / "saved", compiled, opt, {"step": 1})
    saved = tmp_path / "saved" / "model"
    weight_map = read_index(saved)[0]
    assert sorted(weight_map) == sorted(names)
    moments = load_file(str(tmp_path / "saved" / "optimizer-000.safetensors"))
    assert {key.split("::")[0] for key in moments} <= set(names)
    plain = build_model(preset("test"), device="cpu", seed=4)
    load_tensors(plain, saved, weight_map)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                 compiled.state_dict().values(), strict=True))

    progress = train(cfg)
    assert [r["step"] for r in progress["log"]] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in progress["log"])
    assert math.isfinite(progress["log"][1]["blank_loss"])
    assert sorted(read_index(tmp_path / "run" / "state" / "model")[0]) == sorted(names)


def _saved_state(out: Path) -> Path:
    """A run directory holding a one-step training state of the ``test`` preset, written
    as the trainer writes it (without running the loop); returns its ``state`` folder."""
    cfg = _config(out, 2)
    model = build_model(preset("test"), device="cpu", seed=5)
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # Adam moments and step counters, as after a real step
    state = out / "state"
    save_training_state(state, model, opt, {"step": 1, "pages": 2, "minutes": 0.01,
                                            "runs": 1, "log": []})
    return state


def test_resuming_refuses_a_state_whose_model_shard_was_corrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flipped bit in a saved shard still reads as a tensor: without the index's digest
    check the run would train on, and save, the damaged weights."""
    from opticmem.encoder.errors import CheckpointError

    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    out = tmp_path / "run"
    state = _saved_state(out)
    [shard] = sorted((state / "model").glob("model-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's values: the header still parses
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt") as caught:
        train(_config(out, 2))
    assert caught.value.path == str(shard)
    assert json.loads((state / "progress.json").read_text())["step"] == 1  # left as it was

    weights = tmp_path / "weights"  # the same check when starting from exported weights
    shutil.copytree(state / "model", weights)
    with pytest.raises(CheckpointError, match="corrupt"):
        train(_config(tmp_path / "fresh", 2, init_from=weights))
    assert not (tmp_path / "fresh").exists()  # refused before the run directory was made


@pytest.mark.parametrize("damage, says", [
    ("progress_cut", "unreadable training progress"),
    ("progress_list", "not a JSON object"),
    ("progress_no_step", "step = None"),
    ("progress_negative_step", "step = -5"),
    ("progress_nan_minutes", "minutes = nan"),
    ("optimizer_cut", "unreadable optimiser shard"),
    ("optimizer_gone", "no optimizer-"),
    ("optimizer_foreign", "fits no parameter"),
])
def test_resuming_refuses_a_damaged_state_with_a_checkpoint_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, says: str
) -> None:
    """A state cut short by a killed run, or edited by hand, is named as such; it used to
    surface as a JSONDecodeError, KeyError or SafetensorError, or (optimiser shards gone)
    resume at full learning rate over zero Adam moments."""
    from safetensors.torch import save_file

    from opticmem.encoder.errors import CheckpointError

    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    out = tmp_path / "run"
    state = _saved_state(out)
    [opt_file] = sorted(state.glob("optimizer-*.safetensors"))
    if damage == "progress_cut":
        (state / "progress.json").write_text('{"step": 1, "pa')
    elif damage == "progress_list":
        (state / "progress.json").write_text("[1]")
    elif damage == "progress_no_step":
        (state / "progress.json").write_text('{"pages": 2, "minutes": 0.0, "runs": 1, "log": []}')
    elif damage.startswith("progress_"):  # a hand-edited record, of the right types
        progress = json.loads((state / "progress.json").read_text())
        if damage == "progress_negative_step":
            progress["step"] = -5
        else:
            progress["minutes"] = float("nan")
        (state / "progress.json").write_text(json.dumps(progress))
    elif damage == "optimizer_cut":
        opt_file.write_bytes(opt_file.read_bytes()[:100])
    elif damage == "optimizer_gone":
        opt_file.unlink()
    else:
        save_file({"no.such.param::exp_avg": torch.zeros(3)}, str(opt_file))
    with pytest.raises(CheckpointError, match=says) as caught:
        train(_config(out, 2))
    assert "start afresh" in str(caught.value)


def test_resuming_or_starting_from_weights_of_another_preset_names_the_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``opticmem train`` defaults to ``--preset bundled``: rerun without the ``--preset
    test`` a run was started with, it used to fail with a traceback about a "tensor
    missing from checkpoint" (and print no JSON with ``--json``)."""
    from typer.testing import CliRunner

    from opticmem.cli import app
    from opticmem.encoder.errors import CheckpointError

    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    out = tmp_path / "run"
    state = _saved_state(out)
    with pytest.raises(CheckpointError, match=r"holds a 'test' model.*--preset test"):
        train(_config(out, 2, preset="bundled"))
    with pytest.raises(CheckpointError, match=r"are a 'test' model.*--preset test"):
        train(_config(tmp_path / "fresh", 2, preset="bundled", init_from=state / "model"))
    assert not (tmp_path / "fresh" / "state").exists()

    result = CliRunner().invoke(app, ["train", "--out", str(out), "--workers", "0", "--json"])
    assert result.exit_code == 1, result.output
    assert "--preset test" in json.loads(result.stdout)["error"]
    assert json.loads((state / "progress.json").read_text())["step"] == 1  # untouched


def test_weights_of_another_preset_are_refused_before_the_run_directory_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``opticmem train --init-from`` weights of another preset was refused only after
    ``--out`` had been created, leaving an empty run directory behind."""
    from typer.testing import CliRunner

    from opticmem.cli import app
    from opticmem.encoder.errors import CheckpointError

    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    state = _saved_state(tmp_path / "run")
    fresh = tmp_path / "runs" / "fresh"
    with pytest.raises(CheckpointError, match=r"are a 'test' model"):
        train(_config(fresh, 2, preset="bundled", init_from=state / "model"))
    assert not (tmp_path / "runs").exists()
    result = CliRunner().invoke(app, ["train", "--out", str(fresh), "--init-from",
                                      str(state / "model"), "--workers", "0", "--json"])
    assert result.exit_code == 1, result.output
    assert "--preset test" in json.loads(result.stdout)["error"]
    assert not (tmp_path / "runs").exists()


def test_training_without_synth_sources_says_how_to_get_them_before_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a wheel, the default sources folder is inside site-packages and the export tool
    is not installed: ``opticmem train`` without the ``synth`` extra crashed with a
    traceback from the data loader, after making the run directory, naming only
    ``tools/export_synth_sources.py``. It now says to install the extra (or set the
    variable) before anything is made; ``TrainConfig.synth_dir`` is the folder read."""
    from typer.testing import CliRunner

    from opticmem.cli import app

    monkeypatch.setenv(synth.DATA_ENV, str(tmp_path / "no-sources"))
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # as if the extra were not installed
    synth._sources_cached.cache_clear()
    try:
        with pytest.raises(synth.SynthDataError, match=re.escape("opticmem[synth]")):
            train(_config(tmp_path / "lib", 1))
        result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "cli"),
                                          "--workers", "0", "--json"])
        assert result.exit_code == 1, result.output
        error = json.loads(result.stdout)["error"]
        assert "pip install 'opticmem[synth]'" in error and synth.DATA_ENV in error
        assert not (tmp_path / "lib").exists() and not (tmp_path / "cli").exists()
        # the folder TrainConfig names is the one read, whatever the variable says
        progress = train(_config(tmp_path / "run", 1, synth_dir=FIXTURE))
        assert progress["step"] == 1
    finally:
        synth._sources_cached.cache_clear()


def test_saving_a_training_state_clears_what_a_run_killed_mid_save_left_beside_it(
    tmp_path: Path,
) -> None:
    """A run killed while it deleted the previous state left ``state.old`` half full; the
    next save's swap used to fail on it (OSError: directory not empty) at the end of that
    run, losing its work. A half-written ``state.tmp`` must not leak into the new state."""
    out = tmp_path / "run"
    state = _saved_state(out)
    (tmp_path / "run" / "state.old" / "model").mkdir(parents=True)
    (tmp_path / "run" / "state.old" / "model" / "model-00001-of-00001.safetensors").write_bytes(
        b"left")
    (tmp_path / "run" / "state.tmp").mkdir()
    (tmp_path / "run" / "state.tmp" / "optimizer-007.safetensors").write_bytes(b"stale")
    model = build_model(preset("test"), device="cpu", seed=6)
    opt = make_optimizer(model, _config(out, 2), torch.device("cpu"))
    save_training_state(state, model, opt, {"step": 3, "pages": 6, "minutes": 0.1, "runs": 2,
                                            "log": []})
    assert json.loads((state / "progress.json").read_text())["step"] == 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["state"]
    assert [p.name for p in state.glob("optimizer-*")] == ["optimizer-000.safetensors"]


def test_a_run_killed_between_the_renames_of_a_save_resumes_from_the_saved_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save swaps ``state.tmp`` in by renaming ``state`` to ``state.old``, then
    ``state.tmp`` to ``state``. A run killed between the two (a lent machine's time limit)
    left no ``state``: the next call trained from scratch, and its first save deleted both
    complete states beside it."""
    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    out = tmp_path / "run"
    state = _saved_state(out)  # step 1 of run 1
    model = build_model(preset("test"), device="cpu", seed=6)
    opt = make_optimizer(model, _config(out, 2), torch.device("cpu"))
    rename = Path.rename

    def killed_before_the_second(self: Path, target: str | Path) -> Path:
        if self.name == "state.tmp":
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_before_the_second)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(state, model, opt, {"step": 3, "pages": 6, "minutes": 0.1,
                                                "runs": 2, "log": []})
    monkeypatch.setattr(Path, "rename", rename)
    assert not state.exists()
    assert sorted(p.name for p in out.iterdir()) == ["state.old", "state.tmp"]

    progress = train(_config(out, 4))
    assert (progress["step"], progress["pages"], progress["runs"]) == (4, 8, 3)
    assert sorted(p.name for p in out.iterdir()) == ["progress.json", "state",
                                                     "train_config.json"]


@pytest.mark.parametrize("record, text, says", [
    ("progress.json", '{"step": 1, "pa', "unreadable training progress"),
    ("progress.json", "[1]", "not a JSON object"),
    ("training_log.json", '{"step": 1, "log": "lost"}', "log = 'lost'"),
    ("training_log.json", '{"step": "7"}', "step = '7'"),
])
def test_a_damaged_record_beside_init_from_weights_is_refused_before_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str, text: str, says: str
) -> None:
    """The progress record beside ``--init-from`` weights was read with a bare
    ``json.loads`` after the run directory was made: a cut one raised JSONDecodeError, and
    one whose ``log`` or ``step`` had the wrong type failed only inside the loop
    (AttributeError, TypeError), after the first training step."""
    from opticmem.encoder.errors import CheckpointError

    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    weights = tmp_path / "weights"
    shutil.copytree(_saved_state(tmp_path / "run") / "model", weights)
    (weights / record).write_text(text)
    fresh = tmp_path / "fresh"
    with pytest.raises(CheckpointError, match=re.escape(says)) as caught:
        train(_config(fresh, 2, init_from=weights))
    assert caught.value.path == str(weights / record)
    assert "fix or remove it" in str(caught.value)
    assert not fresh.exists()
    (weights / record).write_text('{"step": 1, "minutes": 2.5}')  # fields may be absent
    progress = train(_config(fresh, 2, init_from=weights))
    assert (progress["step"], progress["runs"]) == (2, 1)
    assert [r["step"] for r in progress["log"]] == [2]


def test_a_state_without_its_progress_record_is_refused_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of a run directory cut short before its last file (``progress.json`` comes
    after ``model/`` and the optimiser shards) left a state without its record: the next
    call trained from scratch as if there were none, and its first save replaced the
    trained weights with the fresh ones."""
    from opticmem.encoder.errors import CheckpointError

    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    out = tmp_path / "run"
    state = _saved_state(out)
    (state / "progress.json").unlink()
    [shard] = sorted((state / "model").glob("model-*.safetensors"))
    before = shard.read_bytes()
    with pytest.raises(CheckpointError, match=re.escape("no progress.json")) as caught:
        train(_config(out, 2))
    assert caught.value.path == str(state / "progress.json")
    assert "start afresh" in str(caught.value)
    assert shard.read_bytes() == before
    (state / "model").rename(tmp_path / "kept")  # an empty state folder is no state
    shutil.rmtree(state)
    state.mkdir()
    assert train(_config(out, 1))["runs"] == 1


@pytest.mark.parametrize("lost", [0, -1])
def test_resuming_refuses_a_state_that_lost_one_of_its_optimizer_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lost: int
) -> None:
    """Only a state with no optimiser shard at all was refused: with one of several
    missing, its parameters resumed at full learning rate over zero Adam moments (or the
    loop raised a KeyError, a parameter's moments split across two shards)."""
    import opticmem.encoder.train as train_module
    from opticmem.encoder.errors import CheckpointError

    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    monkeypatch.setattr(train_module, "OPTIMIZER_SHARD_BYTES", 64 * 1024)
    out = tmp_path / "run"
    state = _saved_state(out)
    shards = sorted(state.glob("optimizer-*.safetensors"))
    assert len(shards) > 2
    shards[lost].unlink()
    with pytest.raises(CheckpointError, match=f"saved with {len(shards)} optimiser shards: "
                       f"{shards[lost].name} is missing") as caught:
        train(_config(out, 2))
    assert caught.value.path == str(shards[lost])
    assert "start afresh" in str(caught.value)
    assert json.loads((state / "progress.json").read_text())["step"] == 1


def test_train_reports_a_disk_that_fills_up_mid_run_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError from the run itself (a full disk at a save) ended in a raw traceback;
    it is the command's failure (exit 1), said in one line (JSON too)."""
    from typer.testing import CliRunner

    import opticmem.encoder.train as train_module
    from opticmem.cli import app

    def full_disk(cfg: TrainConfig) -> dict[str, object]:
        raise OSError(28, "No space left on device", str(cfg.out_dir / "state.tmp"))

    monkeypatch.setattr(train_module, "train", full_disk)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--preset", "test",
                                      "--workers", "0", "--json"])
    assert result.exit_code == 1, result.output
    assert "No space left" in json.loads(result.stdout)["error"]
    assert not isinstance(result.exception, OSError)


@pytest.mark.parametrize("option", ["--out", "--export"])
@pytest.mark.parametrize("damage", ["under a file", "takes no files"])
def test_train_command_refuses_a_directory_it_cannot_write_before_training(
    tmp_path: Path, recorded_train: list[TrainConfig],
    unwritable_target: Callable[[str, str], Path], option: str, damage: str,
) -> None:
    """An --out under a file or in a folder that takes no files (no permission, a
    read-only mount) failed only in train(), after the data was loaded, as a failure
    (exit 1), not a usage error; an --export there only when the weights were written,
    after the whole training call. Both are usage errors (exit 2) before anything is
    made."""
    from typer.testing import CliRunner

    from opticmem.cli import app

    target = unwritable_target(damage, "dir")
    out = target if option == "--out" else tmp_path / "run"
    args = ["train", "--out", str(out), "--preset", "test"]
    if option == "--export":
        args += ["--export", str(target)]
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(app, args + extra)
        assert result.exit_code == 2, result.output
        said = (json.loads(result.stdout)["error"] if extra
                else " ".join(result.output.split()).replace("│ ", "").replace(" │", ""))
        assert option in said
        assert ("a-file is a file, not a directory" in said if damage == "under a file"
                else "Permission denied" in said)
    assert recorded_train == []
    assert not out.exists() and not target.exists()


def test_train_refuses_a_length_bucket_past_the_decoders_longest_sequence(tmp_path: Path) -> None:
    # --length-bucket 1000000000 padded the first batch to it: the allocator was asked for
    # 192 GB, a RuntimeError traceback after the run directory and the model were made
    limit = preset("test").decoder.max_positions
    with pytest.raises(InputError, match=f"length_bucket must be ≤ the decoder's max_positions "
                                         f"\\({limit}\\)"):
        train(TrainConfig(out_dir=tmp_path / "lib", preset="test", length_bucket=10**9))
    assert not (tmp_path / "lib").exists()
