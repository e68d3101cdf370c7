"""bench/models.py and bench/torch_models.py: the published architectures and their benchmark.

Parameter counts are taken on the meta device (nothing is allocated); only small models run,
on small inputs. The benchmark's timer is replaced: nothing is timed here.
"""
import copy
import importlib.util
import json
import os

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import fastconv  # noqa: E402
import fastconv.torch as fct  # noqa: E402
from fastconv.interop import _layer_choice  # noqa: E402

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "bench")


def _load_runner():
    spec = importlib.util.spec_from_file_location("torch_models",
                                                  os.path.join(BENCH, "torch_models.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts bench/ on sys.path for its `models`
    return module


runner = _load_runner()
models = runner.models

# torchvision's documented parameter counts (the num_params of each model's weights), and the
# variant each refers to: GoogLeNet's is without the auxiliary classifiers (torchvision drops
# them when it loads the weights), Inception-v3's and DeepLabV3's include theirs.
PUBLISHED = {
    "resnet18": (models.resnet18, 11_689_512),
    "alexnet": (models.alexnet, 61_100_840),
    "mobilenet_v2": (models.mobilenet_v2, 3_504_872),
    "googlenet": (models.googlenet, 6_624_904),
    "squeezenet1_1": (models.squeezenet1_1, 1_235_496),
    "shufflenet_v2_x1_0": (models.shufflenet_v2_x1_0, 2_278_604),
    "densenet121": (models.densenet121, 7_978_856),
    "efficientnet_b0": (models.efficientnet_b0, 5_288_548),
    "inception_v3 with aux": (lambda: models.inception_v3(aux_logits=True), 27_161_264),
    "deeplabv3 with aux": (lambda: models.deeplabv3_mobilenet_v3_large(aux_loss=True),
                           11_029_328),
    # the CIFAR variants as in the widely used pytorch-cifar code (not a library's documented
    # number): VGG('VGG11') with batch normalisation and ResNet18()
    "vgg11_bn_cifar": (models.vgg11_bn_cifar, 9_231_114),
    "cifar_resnet18": (models.cifar_resnet18, 11_173_962),
}


def count(build):
    with torch.device("meta"):
        return models.parameter_count(build())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_are_the_published_ones(name):
    build, published = PUBLISHED[name]
    assert count(build) == published


def test_parameter_counts_without_the_auxiliary_heads():
    # by hand: Inception-v3's auxiliary head is conv 768->128 1x1 + BN, conv 128->768 5x5 + BN
    # (BatchNorm: 2 parameters per channel), fc 768->1000; DeepLabV3's FCNHead(40, 21) is conv
    # 40->10 3x3 + BN, conv 10->21 1x1 with bias
    inception_aux = 768 * 128 + 2 * 128 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000
    assert count(models.inception_v3) == 27_161_264 - inception_aux == 23_834_568
    fcn_aux = 40 * 10 * 9 + 2 * 10 + 10 * 21 + 21
    assert count(models.deeplabv3_mobilenet_v3_large) == 11_029_328 - fcn_aux
    # by hand: LeNet-5 (C1, C3 fully connected, C5, F6, output) and the context module
    lenet = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (120 * 16 * 25 + 120) + (84 * 120 + 84) + 850
    assert count(models.lenet5) == lenet == 61_706
    assert count(models.context_network) == 7 * (64 * 64 * 9 + 64) + 64 * 64 + 64


def test_every_benchmarked_model_has_a_checked_count():
    checked = {"inception_v3", "deeplabv3_mobilenet_v3_large", "lenet5", "context_network"}
    assert set(models.MODELS) == {name for name in PUBLISHED if " " not in name} | checked
    assert len(models.MODELS) == 14


def test_the_context_network_dilations():
    net = models.context_network(8)
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation[0] for c in convs] == [1, 1, 2, 4, 8, 16, 1, 1]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 7 + [(1, 1)]
    assert net(torch.randn(1, 8, 9, 9)).shape == (1, 8, 9, 9)


SMALL = [  # name, builder, input: small models, or big ones on small inputs
    ("lenet5", models.lenet5, (2, 1, 32, 32)),
    ("context_network", lambda: models.context_network(16), (1, 16, 20, 20)),
    ("vgg11_bn_cifar", models.vgg11_bn_cifar, (2, 3, 32, 32)),
    ("shufflenet_v2_x1_0", lambda: models.shufflenet_v2_x1_0(10), (1, 3, 64, 64)),
    ("googlenet", lambda: models.googlenet(10), (1, 3, 64, 64)),
]


@pytest.mark.parametrize("name, build, shape", SMALL, ids=[s[0] for s in SMALL])
def test_small_models_run_swapped_and_match_torch(name, build, shape):
    torch.manual_seed(0)
    ref = build().eval()
    fast = fct.swap_modules(copy.deepcopy(ref))
    assert any(isinstance(m, fct.Conv2d) for m in fast.modules())
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-5)


def test_a_training_step_matches_torch():
    torch.manual_seed(0)
    ref = models.lenet5().train()
    fast = fct.swap_modules(copy.deepcopy(ref))
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))
    for model in (ref, fast):
        TF.cross_entropy(model(x), y).backward()
    for a, b in zip(fast.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------ the runner
def test_runner_arguments():
    args = runner.parse_args(["--models", "lenet5,alexnet", "--quick", "--rounds", "7"])
    assert args.models == ["lenet5", "alexnet"] and args.rounds == 2 and args.quick
    assert runner.parse_args([]).models == list(models.MODELS)
    for bad in (["--models", "lenet6"], ["--rounds", "0"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            runner.parse_args(bad)


def test_runner_table_and_json(monkeypatch, tmp_path, capsys):
    # a fake timer: torch 2 ms, fastconv 1 ms on every mode; each function still runs once
    def fake_time_pair(run_a, run_b, rounds, warmup=2):
        run_a()
        run_b()
        return 0.002, 0.001
    monkeypatch.setattr(runner, "time_pair", fake_time_pair)
    monkeypatch.setattr(_layer_choice, "_time_candidates",  # pooling faster on torch
                        lambda m, a, b: (1.0, 2.0) if isinstance(m, torch.nn.AvgPool2d) else (2, 1))
    monkeypatch.setattr(_layer_choice, "_time_model", lambda m, a, b: (2.0, 1.0))
    out = tmp_path / "r.json"
    threads = torch.get_num_threads(), fastconv.get_num_threads()
    try:
        assert runner.main(["--models", "lenet5", "--quick", "--threads", "1",
                            "--example-input", "--json", str(out)]) == 0
    finally:  # main sets both libraries' thread counts for the process
        torch.set_num_threads(threads[0])
        fastconv.set_num_threads(threads[1])
    text = capsys.readouterr().out
    assert "lenet5: 61,706 parameters" in text and "ok" in text
    assert text.count("AvgPool2d(kernel_size=2") == 6  # two per mode
    data = json.loads(out.read_text())
    (r,) = data["results"]
    assert r["inference_match"] and r["channels_last_match"]
    for mode in runner.MODES:
        assert r[mode]["torch_ms"] == 2.0 and r[mode]["fastconv_ms"] == 1.0
        assert r[mode]["ratio"] == 2.0
        assert [k["name"] for k in r[mode]["kept_on_torch"]] == ["2", "5"]
    assert runner.geomean([2.0, 8.0]) == pytest.approx(4.0)
