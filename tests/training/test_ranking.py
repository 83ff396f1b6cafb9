"""Streamed unit ranking against a brute-force pass that keeps every image's features."""

import math

import numpy as np
import pytest
import torch

from deepminer.fcn import build_classifier, to_fcn
from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
from training.patches import CLASSES
from training.ranking import activations_per_unit, fcn_maps, rank_units

ARGS = dict(short_side=96, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=torch.device("cpu"), progress=False)


@pytest.fixture(scope="module")
def fcn():
    torch.manual_seed(1)
    return to_fcn(build_classifier(depth=18, num_classes=3)).eval()


def test_ranking_matches_brute_force(fcn, phantom_records):
    records = phantom_records[:6]
    ranking = rank_units(fcn, records, classes=CLASSES, top_per_image=8, top_per_class=20, **ARGS)

    maps = list(fcn_maps(fcn, records, **ARGS))
    weight = fcn.head.weight.detach()[:, :, 0, 0].numpy()
    counts = np.zeros((3, weight.shape[1]), dtype=int)
    for item in maps:
        for c in range(3):
            infl = [float(item.features[k].max()) * weight[c, k] for k in range(weight.shape[1])]
            top = sorted(range(len(infl)), key=lambda k: (-infl[k], k))[:8]
            counts[c, top] += 1
    np.testing.assert_array_equal(ranking.counts, counts)
    assert ranking.counts.sum() == 3 * 8 * len(records)

    all_acts = np.concatenate([m.features.reshape(m.features.shape[0], -1) for m in maps], axis=1)
    assert activations_per_unit(records, short_side=96) == all_acts.shape[1]
    keep = math.ceil(0.01 * all_acts.shape[1])
    np.testing.assert_array_equal(ranking.thresholds, np.sort(all_acts, axis=1)[:, -keep])

    for c in range(3):
        ranked = ranking.ranked(c)
        assert len(ranked) <= 20
        # the most frequent first; nobody left out is more frequent than the last one in
        assert list(ranking.counts[c, ranked]) == sorted(ranking.counts[c, ranked], reverse=True)
        outside = np.setdiff1d(np.arange(counts.shape[1]), ranked)
        assert ranking.counts[c, outside].max(initial=0) <= ranking.counts[c, ranked].min()
        assert ranking.coverage(c) == pytest.approx(ranking.counts[c, ranked].sum() / (8 * len(records)))


def test_ranking_json_is_zero_based_and_complete(fcn, phantom_records):
    ranking = rank_units(fcn, phantom_records[:3], classes=CLASSES, top_per_image=4, top_per_class=5, **ARGS)
    data = ranking.to_json()
    assert data["num_units"] == 512 and len(data["unit_thresholds"]) == 512
    for name in CLASSES:
        entry = data["per_class"][name]
        assert entry["slots_total"] == 12
        assert [u["rank"] for u in entry["units"]] == list(range(1, len(entry["units"]) + 1))
        assert all(isinstance(u["unit_id"], int) and 0 <= u["unit_id"] < 512 for u in entry["units"])
    with pytest.raises(ValueError, match="no hold-out images"):
        rank_units(fcn, [], classes=CLASSES, **ARGS)


def test_a_watched_ranking_shares_its_pass(fcn, phantom_records):
    """``watch`` sees every image's maps once, in order, and the ranking read through it is unchanged: the unit
    embedding's maxima gathered that way equal those of a pass of their own."""
    from training.embedding import UnitMaxima, max_activation_matrix

    records = phantom_records[:4]
    seen: list[str] = []

    def note(maps):
        for item in maps:
            seen.append(item.record.image_id)
            yield item

    maxima = UnitMaxima()
    watched = rank_units(fcn, records, classes=CLASSES, watch=lambda maps: maxima.watch(note(maps)), **ARGS)
    plain = rank_units(fcn, records, classes=CLASSES, **ARGS)
    assert seen == [r.image_id for r in records]
    assert watched.to_json() == plain.to_json()
    np.testing.assert_array_equal(maxima.matrix(), max_activation_matrix(fcn_maps(fcn, records, **ARGS)))
