"""Auxiliary features: a per-class term on every location, so the FCN identities and the CAM stay exact."""

import numpy as np
import pytest
import torch
from torchvision.models import resnet

from deepminer.auxiliary import AuxFeature, aux_vector, fit_normalisation
from deepminer.fcn import AuxiliaryClassifier, build_classifier, num_units, to_fcn
from deepminer.formulas import auxiliary_term, class_activation_map

FEATURES = (AuxFeature("age", 57.0, 9.0), AuxFeature("prs", 0.25, 0.75))  # exact in float32


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)


@pytest.fixture(scope="module")
def aux_classifier() -> AuxiliaryClassifier:
    torch.manual_seed(0)
    model = build_classifier(depth=18, num_classes=3, aux_features=FEATURES).eval()
    assert isinstance(model, AuxiliaryClassifier)
    _randomise_batchnorm(model)
    with torch.no_grad():
        model.aux.weight.copy_(torch.randn(3, 2))  # V starts at 0; a trained one is not
    return model


def raw_aux(n: int, seed: int = 0) -> torch.Tensor:
    z = np.random.default_rng(seed).standard_normal((n, len(FEATURES)))
    return torch.tensor([[f.mean + f.std * v for f, v in zip(FEATURES, row)] for row in z], dtype=torch.float32)


@pytest.mark.parametrize("shape", [(64, 64), (96, 160)])
def test_fcn_mean_equals_classifier_logits_with_aux(aux_classifier, shape):
    fcn = to_fcn(aux_classifier).eval()
    x, aux = torch.randn(2, 3, *shape), raw_aux(2)
    with torch.inference_mode():
        logits_map, _ = fcn(x, aux)
        expected = aux_classifier(x, aux)
        image_only = aux_classifier.resnet(x)
    torch.testing.assert_close(logits_map.mean(dim=(2, 3)), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected, image_only, atol=1e-3)  # the aux term really is there


def test_cam_plus_bias_plus_aux_term_is_the_logit_map(aux_classifier):
    fcn = to_fcn(aux_classifier).eval()
    aux = raw_aux(1, seed=3)
    with torch.inference_mode():
        logits_map, features = fcn(torch.randn(1, 3, 128, 96), aux)
    weight = fcn.head.weight.detach()[:, :, 0, 0].numpy()
    bias = fcn.head.bias.detach().numpy()
    term = auxiliary_term(
        aux[0].numpy(),
        np.array([f.mean for f in FEATURES]),
        np.array([f.std for f in FEATURES]),
        fcn.aux.weight.detach().numpy(),
    )
    for c in range(3):
        cam = class_activation_map(features[0].numpy(), weight, c)
        np.testing.assert_allclose(cam + bias[c] + term[c], logits_map[0, c].numpy(), rtol=1e-4, atol=1e-4)


def test_aux_does_not_change_features(aux_classifier):
    fcn = to_fcn(aux_classifier).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        _, a = fcn(x, raw_aux(1, seed=1))
        _, b = fcn(x, raw_aux(1, seed=2))
    torch.testing.assert_close(a, b)


def test_auxiliary_term_matches_brute_force():
    rng = np.random.default_rng(0)
    values, mean, std = rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, size=4)
    weight = rng.normal(size=(3, 4)).astype(np.float32)
    expected = [sum(weight[c, j] * (values[j] - mean[j]) / std[j] for j in range(4)) for c in range(3)]
    np.testing.assert_allclose(auxiliary_term(values, mean, std, weight), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="weight"):
        auxiliary_term(values, mean, std, weight[:, :3])


def test_no_aux_path_is_the_plain_resnet():
    torch.manual_seed(0)
    plain = build_classifier(depth=18, num_classes=3)
    torch.manual_seed(0)
    with_aux = build_classifier(depth=18, num_classes=3, aux_features=FEATURES)
    assert type(plain) is resnet.ResNet
    assert list(plain.state_dict()) == list(resnet.resnet18(num_classes=3).state_dict())
    # The aux head draws nothing from the RNG: the image layers start the same.
    assert isinstance(with_aux, AuxiliaryClassifier)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(with_aux.state_dict()[f"resnet.{key}"], value)
    assert set(with_aux.state_dict()) - {f"resnet.{k}" for k in plain.state_dict()} == {
        "aux.weight",
        "aux.mean",
        "aux.std",
    }
    assert num_units(plain) == num_units(with_aux) == 512

    fcn = to_fcn(plain.eval())
    assert fcn.aux is None
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        logits, features = fcn(x)
        torch.testing.assert_close(features, fcn.body(x))
        torch.testing.assert_close(logits, fcn.head(features))
    with pytest.raises(ValueError, match="no auxiliary features"):
        fcn(x, torch.zeros(1, 2))


def test_aux_fcn_refuses_missing_or_misshapen_aux(aux_classifier):
    fcn = to_fcn(aux_classifier).eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"needs the auxiliary features \['age', 'prs'\]"):
        fcn(x)
    with pytest.raises(ValueError, match=r"aux must be \(N, 2\)"):
        fcn(x, torch.zeros(1, 3))


def test_aux_head_state_round_trips(aux_classifier):
    copy = build_classifier(depth=18, num_classes=3, aux_features=FEATURES)
    copy.load_state_dict(aux_classifier.state_dict())
    assert copy.aux.features == FEATURES
    torch.testing.assert_close(copy.aux.weight, aux_classifier.aux.weight)


def test_fit_normalisation_per_case():
    cases = [{"age": 40.0, "prs": 1.0}, {"age": 60.0, "prs": 1.0}, {"age": 50.0, "prs": 1.0}]
    age, prs = fit_normalisation(["age", "prs"], cases)
    assert (age.name, age.mean) == ("age", 50.0)
    assert age.std == pytest.approx(float(np.float32(np.std([40, 60, 50]))))  # population std
    assert (prs.mean, prs.std) == (1.0, 1.0)  # constant: std 1 rather than a division by zero
    with pytest.raises(ValueError, match="'bmi' is missing in 3 of 3 cases"):
        fit_normalisation(["bmi"], cases)
    with pytest.raises(ValueError, match="no cases"):
        fit_normalisation(["age"], [])


def test_aux_feature_and_vector_errors():
    assert AuxFeature.from_json(FEATURES[0].to_json()) == FEATURES[0]
    with pytest.raises(ValueError, match="std > 0"):
        AuxFeature("age", 50.0, 0.0)
    with pytest.raises(ValueError, match="name, mean, std"):
        AuxFeature.from_json({"name": "age"})
    np.testing.assert_array_equal(aux_vector({"prs": 2.0, "age": 61.0}, ["age", "prs"]), [61.0, 2.0])
    with pytest.raises(ValueError, match=r"\['prs'\] of image 'x' are missing"):
        aux_vector({"age": 61.0}, ["age", "prs"], owner="image 'x'")
    with pytest.raises(ValueError, match="finite"):
        aux_vector({"age": float("nan")}, ["age"])
