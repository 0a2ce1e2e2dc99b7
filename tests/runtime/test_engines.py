"""The inference runtimes for real: PyTorch, OpenVINO and ONNX Runtime give the network's own
output on any window size; impossible requests are refused naming the alternative; ``auto``
measures once, caches, and drops a disagreeing engine with a warning."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError
from resseg_ray.models import build_model
from resseg_ray.runtime import cpu as cpu_module
from resseg_ray.runtime import select as sel
from resseg_ray.runtime.cpu import CpuInfo, parse_cpuinfo
from resseg_ray.runtime.engines import TorchEngine
from resseg_ray.runtime.onnx_graph import model_digest
from resseg_ray.runtime.select import Choice, EngineFactory, GuardedEngine, RuntimeFallback, select_engine

CPU = DevicePolicy.resolve("cpu")
HAS_BF16 = cpu_module.cpu_info().bf16_units is not None


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("prop18", in_bands=3)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("RESSEG_CACHE_DIR", str(tmp_path / "cache"))
    return str(tmp_path / "cache")


def _choices(cache: str) -> list[str]:
    folder = os.path.join(cache, "choices")
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".json")]


def _windows(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("arch", ["prop18", "unet19"])
def test_graph_runtimes_give_torchs_output_on_any_window_size(arch, runtime, cache) -> None:
    torch.manual_seed(0)
    factory = EngineFactory(build_model(arch, in_bands=3), CPU)
    reference = factory.build(Choice("torch", "fp32"))
    engine = factory.build(Choice(runtime, "fp32"))
    for shape in [(2, 3, 64, 64), (3, 3, 70, 45), (1, 3, 1, 33)]:  # aligned, padded, replicated
        x = _windows(shape)
        want, got = reference.forward(x), engine.forward(x)
        assert got.shape == want.shape == (shape[0], 2, *shape[2:])
        assert np.abs(got - want).max() < 1e-4
    assert engine.describe()["runtime"] == runtime and engine.describe()["precision"] == "fp32"
    # one graph per network, cached by its weights' digest, with the digest of its content
    graphs = os.path.join(cache, "graphs")
    assert sorted(os.path.splitext(f)[1] for f in os.listdir(graphs)) == [".onnx", ".sha256"]


def test_a_cached_graph_swapped_or_truncated_is_rebuilt(cache) -> None:
    """A graph in the cache that is another network's (swapped under this one's name) or cut
    short is not used: it is exported again, and the engine gives this network's output."""
    import shutil

    torch.manual_seed(0)
    a, b = build_model("prop18", in_bands=3), build_model("prop18", in_bands=3)
    x = _windows((1, 3, 64, 64))
    for net in (a, b):
        EngineFactory(net, CPU).build(Choice("onnxruntime", "fp32")).forward(x)
    graphs = os.path.join(cache, "graphs")
    fa, fb = sorted(
        (os.path.join(graphs, f) for f in os.listdir(graphs) if f.endswith(".onnx")),
        key=lambda f: EngineFactory(a, CPU).digest[:32] not in f,
    )
    want = EngineFactory(a, CPU).build(Choice("torch", "fp32")).forward(x)
    shutil.copy(fb, fa)  # b's graph under a's name
    got = EngineFactory(a, CPU).build(Choice("onnxruntime", "fp32")).forward(x)
    assert np.abs(got - want).max() < 1e-4
    with open(fa, "r+b") as f:  # cut short
        f.truncate(1000)
    got = EngineFactory(a, CPU).build(Choice("onnxruntime", "fp32")).forward(x)
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units")
@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_bf16_engines_agree_with_fp32_on_almost_every_pixel(net, runtime, cache) -> None:
    factory = EngineFactory(net, CPU)
    x = _windows((2, 3, 96, 96))
    want = factory.build(Choice("torch", "fp32")).forward(x)
    got = factory.build(Choice(runtime, "bf16")).forward(x)
    assert 0 < np.abs(got - want).max() < 0.1  # really bf16, and close
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99


def test_model_digest_follows_the_weights(net) -> None:
    other = build_model("prop18", in_bands=3)
    other.load_state_dict(net.state_dict())
    assert model_digest(other) == model_digest(net)
    with torch.no_grad():
        next(other.parameters())[0].add_(1e-3)
    assert model_digest(other) != model_digest(net)


def test_cpu_flags_decide_the_bf16_units() -> None:
    text = "model name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    amx = parse_cpuinfo(text)
    assert amx.model == "Intel Xeon" and amx.bf16_units == "amx"
    assert parse_cpuinfo("model name: AMD EPYC\nflags: avx2 avx512_bf16\n").bf16_units == "avx512_bf16"
    assert parse_cpuinfo("model name: old\nflags: sse2 avx2 fma\n").bf16_units is None


@pytest.mark.parametrize(
    ("runtime", "precision", "device", "flags", "says"),
    [
        ("auto", "fp16", "cpu", ("avx512_bf16",), "--precision fp16 is for CUDA GPUs"),
        ("torch", "bf16", "cpu", ("avx2",), "has no bf16 units"),
        ("onnxruntime", "bf16", "cpu", ("avx512_bf16",), "--runtime openvino or torch"),
        ("openvino", "auto", "cuda", ("avx2",), "use --runtime torch (or auto), or --device cpu"),
    ],
)
def test_requests_this_machine_cannot_honour_are_refused_naming_the_alternative(
    runtime, precision, device, flags, says, monkeypatch
) -> None:
    monkeypatch.setattr(sel, "cpu_info", lambda: CpuInfo("Test CPU", flags))
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        sel.candidates(runtime, precision, torch.device(device))


def test_a_runtime_that_is_not_installed_is_refused_and_left_out_of_auto(monkeypatch) -> None:
    real = sel.installed
    monkeypatch.setattr(sel, "installed", lambda r: r != "openvino" and real(r))
    with pytest.raises(ConfigError, match="pip install openvino, or use --runtime torch or auto"):
        sel.candidates("openvino", "auto", torch.device("cpu"))
    assert all(c.runtime != "openvino" for c in sel.candidates("auto", "auto", torch.device("cpu")))


def test_auto_without_bf16_units_measures_only_fp32(monkeypatch) -> None:
    monkeypatch.setattr(sel, "cpu_info", lambda: CpuInfo("Test CPU", ("avx2",)))
    cands = sel.candidates("auto", "auto", torch.device("cpu"))
    assert {c.precision for c in cands} == {"fp32"} and Choice("torch", "fp32") in cands


def test_auto_measures_once_caches_and_runs_the_fastest(net, cache, monkeypatch) -> None:
    shape = (2, 3, 64, 64)
    engine = select_engine(net, CPU, "auto", "auto", shape)
    (path,) = _choices(cache)
    record = json.load(open(path))
    timings = record["timings"]
    assert set(timings) == {str(c) for c in sel.candidates("auto", "auto", CPU.device)}
    fastest = min(timings, key=timings.get)
    assert f"{engine.runtime} {engine.precision}" == fastest
    x = _windows(shape)
    want = EngineFactory(net, CPU).build(Choice("torch", "fp32")).forward(x)
    assert (engine.forward(x).argmax(1) == want.argmax(1)).mean() >= sel.MIN_AGREEMENT

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(sel, "calibrate", no_measuring)
    again = select_engine(net, CPU, "auto", "auto", shape)
    assert f"{again.runtime} {again.precision}" == fastest


def test_the_measurement_is_the_architectures_and_serves_other_weights(net, cache, monkeypatch) -> None:
    shape = (1, 3, 64, 64)
    select_engine(net, CPU, "auto", "auto", shape)
    monkeypatch.setattr(sel, "calibrate", lambda *a, **k: pytest.fail("measured again"))
    torch.manual_seed(3)
    refined = build_model("prop18", in_bands=3)  # other weights, same network
    assert select_engine(refined, CPU, "auto", "auto", shape) is not None
    with pytest.raises(pytest.fail.Exception):
        select_engine(build_model("prop34", in_bands=3), CPU, "auto", "auto", shape)


def test_auto_drops_an_engine_that_disagrees_with_fp32_and_remembers(net, cache) -> None:
    torch.manual_seed(1)
    wrong = EngineFactory(build_model("prop18", in_bands=3), CPU).build(Choice("torch", "fp32"))
    factory = EngineFactory(net, CPU)
    reference = factory.build(Choice("torch", "fp32"))
    verdicts: list[tuple[bool, float]] = []
    guarded = GuardedEngine(wrong, reference, lambda: reference, lambda k, a: verdicts.append((k, a)))
    x = _windows((2, 3, 64, 64))
    got = guarded.forward(x)
    assert verdicts and not verdicts[0][0] and verdicts[0][1] < sel.MIN_AGREEMENT
    np.testing.assert_array_equal(got, reference.forward(x))  # from the first batch on
    assert guarded.active is reference and guarded.describe()["runtime"] == "torch"


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units")
def test_a_rejected_bf16_choice_warns_and_is_not_chosen_again(net, cache, monkeypatch) -> None:
    shape = (2, 3, 64, 64)
    monkeypatch.setattr(sel, "MIN_AGREEMENT", 1.01)  # nothing in bf16 can agree this well
    select_engine(net, CPU, "openvino", "auto", shape)  # measured and cached: make bf16 the fastest
    (path,) = _choices(cache)
    record = json.load(open(path))
    record["timings"] = {"openvino fp32": 2.0, "openvino bf16": 1.0}
    json.dump(record, open(path, "w"))
    first = select_engine(net, CPU, "openvino", "auto", shape)
    assert isinstance(first, GuardedEngine)
    with pytest.warns(RuntimeFallback, match="using openvino fp32 instead"):
        first.forward(_windows(shape))
    assert (first.runtime, first.precision) == ("openvino", "fp32")
    verdicts = json.load(open(path))["verdicts"][model_digest(net)]
    assert verdicts == {"openvino bf16": {"kept": False, "agreement": verdicts["openvino bf16"]["agreement"]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = select_engine(net, CPU, "openvino", "auto", shape)
    assert not isinstance(again, GuardedEngine) and again.precision == "fp32"


def test_explicit_choices_and_unknown_networks_run_as_asked(net, cache) -> None:
    engine = select_engine(net, CPU, "onnxruntime", "fp32", (1, 3, 32, 32))
    assert (engine.runtime, engine.precision) == ("onnxruntime", "fp32")
    assert not os.path.exists(os.path.join(cache, "choices"))  # nothing to choose, nothing measured

    class Plain(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x[:, :1], -x[:, :1]], 1)

    plain = select_engine(Plain(), CPU, "auto", "auto", (1, 3, 32, 32))
    assert isinstance(plain, TorchEngine) and plain.precision == "fp32"
