"""The registries (precisions, CAM methods, base architectures) and the helpers that replaced duplicated code:
every registered name round-trips, an unknown name gets the same error text as before, and the lists the rest of
the package imports are the registries' own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from gcage_fast.cam.registry import ALL_METHODS, EXPLAIN_ONLY_METHODS, IN_GRAPH_METHODS, METHODS, PatchInputs
from gcage_fast.errors import ConfigError, EngineError, ModelError
from gcage_fast.precision import GRAPH_PRECISIONS, PRECISIONS_BY_BACKEND, SCAN_PRECISIONS, Precision, check_precision


# -- precisions ---------------------------------------------------------------------------------------------------


def test_every_precision_round_trips():
    for p in Precision:
        assert check_precision(p.value) == p.value == p
    assert SCAN_PRECISIONS == ("fp32", "fp16", "int8", "bf16")
    assert GRAPH_PRECISIONS == ("fp32", "fp16", "int8")
    assert PRECISIONS_BY_BACKEND == {"ort": GRAPH_PRECISIONS, "tensorrt": GRAPH_PRECISIONS,
                                     "torch": ("fp32", "fp16", "bf16")}


def test_the_precision_lists_are_the_registrys():
    import gcage_fast.config as config

    assert config.SCAN_PRECISIONS is SCAN_PRECISIONS


def test_unknown_precisions_keep_their_messages():
    from gcage_fast.config import ScanConfig
    from gcage_fast.engine.factory import graph_precision
    from gcage_fast.export.tensorrt_build import build_engine, plan_precision

    with pytest.raises(ConfigError) as e:
        ScanConfig(inputs=("x",), output="o", precision="fp8").validate()
    assert str(e.value) == "unknown precision 'fp8'; choose fp32, fp16, int8, bf16"
    with pytest.raises(ConfigError) as e:
        plan_precision(10, "bf16", "fp32")
    assert str(e.value) == "unknown precision 'bf16'; choose fp32, fp16, int8"
    with pytest.raises(ConfigError) as e:
        build_engine("graph.onnx", precision="bf16")
    assert str(e.value) == "unknown precision 'bf16'; choose fp32, fp16, int8"
    with pytest.raises(ConfigError) as e:
        graph_precision("torch", "int8")
    assert str(e.value) == ("--backend torch runs --precision fp32, fp16, bf16, not int8 "
                            "(int8 runs on --backend ort or tensorrt)")
    with pytest.raises(ConfigError) as e:
        graph_precision("ort", "bf16")
    assert str(e.value) == "--backend ort runs --precision fp32, fp16, int8, not bf16 (bf16 runs on --backend torch)"
    with pytest.raises(ConfigError) as e:
        graph_precision("tensorrt", "fp8")
    assert str(e.value) == "--backend tensorrt runs --precision fp32, fp16, int8, not fp8"
    for backend, runs in PRECISIONS_BY_BACKEND.items():
        for p in runs:
            assert graph_precision(backend, p) == ("fp32" if backend == "torch" else p)


def test_export_options_refuse_an_unknown_precision(tiny_model_dir):
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import load_model

    model = load_model(tiny_model_dir)
    with pytest.raises(ConfigError) as e:
        ExportOptions.for_model(model, precision="bf16")
    assert str(e.value) == "unknown precision 'bf16'; choose fp32, fp16, int8"


# -- CAM methods --------------------------------------------------------------------------------------------------


def test_the_registry_and_the_configuration_import_without_torch():
    code = ("import sys; import gcage_fast.config, gcage_fast.cam.registry, gcage_fast.precision; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cam_method_names_come_from_the_registry():
    from gcage_fast.cam import METHODS as package_methods
    from gcage_fast.cam.perturbation import ALL_METHODS as perturbation_all
    from gcage_fast.cam.perturbation import EXTRA_METHODS
    from gcage_fast.cam.weights import METHODS as weight_methods
    from gcage_fast.config import CAM_METHODS

    assert CAM_METHODS == IN_GRAPH_METHODS == ("gradcam", "hirescam", "xgradcam", "gradcam++", "layercam")
    assert EXTRA_METHODS == EXPLAIN_ONLY_METHODS == ("eigencam", "scorecam", "ablationcam", "lime")
    assert package_methods == weight_methods == CAM_METHODS
    assert perturbation_all == ALL_METHODS == CAM_METHODS + EXTRA_METHODS == tuple(METHODS)
    assert [n for n, m in METHODS.items() if m.extra_passes] == ["scorecam", "ablationcam", "lime"]


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_cam_method_resolves(name):
    m = METHODS[name]
    assert m.name == name and m.paper
    assert callable(m.explain_fn())
    if m.in_graph:
        assert callable(m.weights_fn()) and callable(m.reference_fn())
    else:
        with pytest.raises(ValueError):
            m.weights_fn()


def test_unknown_cam_methods_keep_their_messages(tiny_model_dir):
    from gcage_fast.cam.analytic import BaseWithCAM
    from gcage_fast.cam.reference import _spatial_cam
    from gcage_fast.cam.targets import parse_target
    from gcage_fast.cam.weights import cam_weights
    from gcage_fast.explain.explainer import parse_methods
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import load_model

    known = "gradcam, hirescam, xgradcam, gradcam++, layercam"
    g = torch.ones(1, 4)
    for bad in ("nope", "scorecam"):  # an explain-only method has no in-graph weights
        with pytest.raises(ValueError) as e:
            cam_weights(bad, g, g, 49)
        assert str(e.value) == f"unknown CAM method {bad!r}; known: {known}"
        with pytest.raises(ValueError) as e:
            _spatial_cam(bad, torch.ones(1, 4, 7, 7), torch.ones(1, 4, 7, 7))
        assert str(e.value) == f"unknown CAM method {bad!r}"
    model = load_model(tiny_model_dir)
    target = parse_target("fake", model.spec.class_names, model.spec.authentic_index)
    with pytest.raises(ValueError) as e:
        BaseWithCAM(model.base, "eigencam", target)
    assert str(e.value) == f"unknown CAM method 'eigencam'; known: {known}"
    with pytest.raises(ConfigError) as e:
        ExportOptions.for_model(model, "lime")
    assert str(e.value) == f"unknown CAM method 'lime'; choose from {known}"
    with pytest.raises(ConfigError) as e:
        parse_methods("gradcam,nope")
    assert str(e.value) == f"unknown CAM method nope; choose from {known}, eigencam, scorecam, ablationcam, lime or all"
    assert parse_methods("all") == ALL_METHODS


def test_in_graph_weights_match_the_reference_on_a_uniform_gradient():
    """Each in-graph entry's weights, on a spatially uniform gradient, give its reference formula's CAM."""
    gen = torch.Generator().manual_seed(0)
    acts = torch.rand(2, 6, 7, 7, generator=gen)
    grad = torch.randn(2, 6, generator=gen) / 49  # dY/dA, the same at every position
    for name in IN_GRAPH_METHODS:
        m = METHODS[name]
        alpha = m.weights_fn()(grad, acts.sum(dim=(2, 3)), 49)
        ours = torch.relu(torch.einsum("nk,nkhw->nhw", alpha, acts))
        ref = torch.relu(m.reference_fn()(acts, grad[:, :, None, None].expand(-1, -1, 7, 7)))
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)


def test_explain_functions_take_patch_inputs(tiny_model_dir):
    """Every method's explain function runs on one patch and gives a raw map or a heatmap of the right shape."""
    from gcage_fast.cam.perturbation import forward_family
    from gcage_fast.cam.targets import parse_target
    from gcage_fast.export.graphs import base_graph
    from gcage_fast.models.registry import load_model

    model = load_model(tiny_model_dir)
    graph = base_graph(model, "gradcam", "fake", "layer4", with_activations=True)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        probs, _, acts, grads = (t.numpy() for t in graph(x))

    def probs_fn(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return graph(torch.from_numpy(batch))[0].numpy()

    target = parse_target("fake", model.spec.class_names, model.spec.authentic_index)
    family = forward_family(acts, grads)
    for name in ALL_METHODS:
        inputs = PatchInputs(name, 0, x[0].numpy(), acts[0], probs[0], family, target, probs_fn, model.base,
                             batch_size=32, lime_samples=8)
        cam, heat = METHODS[name].explain_fn()(inputs)
        if name == "lime":
            assert cam is None and heat.shape == (224, 224)
        else:
            assert heat is None and cam.shape == acts.shape[2:]
        if name in IN_GRAPH_METHODS:
            np.testing.assert_array_equal(cam, family[name][0])


# -- base architectures -------------------------------------------------------------------------------------------


def test_every_architecture_round_trips(tmp_path):
    from gcage_fast.models.architectures import ARCHITECTURES, BASE_ARCHS
    from gcage_fast.models.registry import base_arch, create_base, init_model, load_model
    from gcage_fast.models.spec import BASE_ARCHS as spec_archs

    assert spec_archs is BASE_ARCHS and BASE_ARCHS == ("susy", "effnet-lite0") == tuple(ARCHITECTURES)
    for name, entry in ARCHITECTURES.items():
        base = create_base(name, 3, 16, 32)
        assert isinstance(base, entry.module_class())
        assert base_arch(base) == (name, 16 if entry.width_key else 0, 32)
        spec = init_model(tmp_path / name, arch=name, width=16, hidden=32, with_head=False)
        assert spec.base.arch == name
        assert spec.name == ("random-w16-s0" if name == "susy" else f"random-{name}-s0")
        assert base_arch(load_model(tmp_path / name).base) == base_arch(base)


def test_unknown_architectures_keep_their_messages():
    from gcage_fast.models.architectures import architecture
    from gcage_fast.models.registry import base_arch, create_base
    from gcage_fast.models.spec import BaseSpec, ModelSpec

    for call in (lambda: create_base("vit", 2), lambda: architecture("vit")):
        with pytest.raises(ModelError) as e:
            call()
        assert str(e.value) == "unknown base architecture 'vit' (known: susy, effnet-lite0)"
    with pytest.raises(ModelError) as e:
        ModelSpec("m", "1", ("a", "b"), BaseSpec("b.safetensors", "0" * 64, arch="vit"), None).validate("spec")
    assert str(e.value) == "spec: unknown base architecture 'vit' (known: susy, effnet-lite0)"
    with pytest.raises(ModelError, match="not a base detector of a known architecture"):
        base_arch(torch.nn.Linear(2, 2))


# -- helpers that replaced duplicated code ------------------------------------------------------------------------


def test_printable_escapes_what_sources_and_prepare_escaped():
    from gcage_fast.ingest.prepare import Prepared
    from gcage_fast.ingest.sources import display_path
    from gcage_fast.text import printable

    assert printable("a\tb\x1b[2J c\u200bé") == "a\\tb\\x1b[2J c\\u200bé"
    assert display_path(b"bad\xff\nname") == "bad\\xff\\nname"
    p = Prepared(0).fail("decode.error", "line\r\nnext\x07")
    assert p.error_detail == "line\\r\\nnext\\x07"


def test_refuse_external_data_on_bytes_names_the_engine_build(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from gcage_fast.export.self_contained import refuse_external_data

    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../../etc/hostname")
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [w])
    data = helper.make_model(graph).SerializeToString()
    with pytest.raises(EngineError) as e:
        refuse_external_data(data, "base.onnx", EngineError, "builds")
    assert str(e.value) == "base.onnx references external tensor data; gcage_fast only builds self-contained graphs"
    with pytest.raises(EngineError, match="^cannot parse junk as ONNX: "):
        refuse_external_data(b"\xff not a graph", "junk", EngineError, "builds")
    (tmp_path / "g.onnx").write_bytes(data)
    with pytest.raises(ModelError) as e:
        refuse_external_data(tmp_path / "g.onnx")
    assert str(e.value) == f"{tmp_path / 'g.onnx'} references external tensor data; gcage_fast only runs " \
                           "self-contained graphs"
    ok = onnx.load_model_from_string(data)
    ok.graph.initializer[0].data_location = TensorProto.DEFAULT
    del ok.graph.initializer[0].external_data[:]
    assert refuse_external_data(ok.SerializeToString(), "ok", EngineError, "builds").graph.node[0].op_type == "Add"


def test_private_dir_is_one_function():
    import gcage_fast.export.cache as cache
    import gcage_fast.export.engine_cache as engine_cache

    assert not hasattr(cache, "_private_dir") and not hasattr(engine_cache, "_private_dir")
