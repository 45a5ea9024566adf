"""Pairwise and BCubed precision/recall/F1, with noise (-1) as singleton clusters."""

import numpy as np
import pytest

from idcluster.experiments.metrics import bcubed_prf, noise_as_singletons, pairwise_prf, score

# Hand-worked example.
#   item:      0  1  2  3  4  5
#   truth:     a  a  a  b  b  c
#   predicted: 0  0  1  1  1 -1    -> noise is its own singleton: clusters {0,1} {2,3,4} {5}
#
# BCubed precision (per item: same-class items in its cluster / cluster size):
#   1, 1, 1/3, 2/3, 2/3, 1            -> sum 14/3, mean 7/9
# BCubed recall (per item: same-class items in its cluster / class size):
#   2/3, 2/3, 1/3, 1, 1, 1            -> sum 14/3, mean 7/9
# BCubed F1 = 7/9.
#
# Pairwise (unordered pairs; ordered pairs double every count, same ratios):
#   predicted same-cluster pairs: (0,1) TP; (2,3) FP, (2,4) FP, (3,4) TP  -> TP=2, FP=2
#   true same-class pairs: (0,1) (0,2) (1,2) (3,4) = 4                     -> FN = 4-2 = 2
#   precision = 2/4 = 0.5, recall = 2/4 = 0.5, F1 = 0.5
TRUTH = ["a", "a", "a", "b", "b", "c"]
PRED = [0, 0, 1, 1, 1, -1]

# Asymmetric example (so a swapped precision/recall is caught): everything merged.
#   truth a a b b, predicted 0 0 0 0
#   BCubed: precision 2/4 for every item = 0.5; recall 1; F1 = 2*0.5*1/1.5 = 2/3
#   Pairwise: 6 predicted pairs, 2 true (both TP) -> precision 1/3, recall 1, F1 = 0.5
MERGED_TRUTH = ["a", "a", "b", "b"]
MERGED_PRED = [0, 0, 0, 0]


def test_bcubed_hand_worked():
    assert bcubed_prf(TRUTH, PRED) == pytest.approx((7 / 9, 7 / 9, 7 / 9))


def test_pairwise_hand_worked():
    assert pairwise_prf(TRUTH, PRED) == pytest.approx((0.5, 0.5, 0.5))


def test_merged_clusters_precision_not_recall():
    assert bcubed_prf(MERGED_TRUTH, MERGED_PRED) == pytest.approx((0.5, 1.0, 2 / 3))
    assert pairwise_prf(MERGED_TRUTH, MERGED_PRED) == pytest.approx((1 / 3, 1.0, 0.5))


def test_score_keys_and_values():
    s = score(TRUTH, PRED)
    assert s == pytest.approx({
        "pairwise_precision": 0.5, "pairwise_recall": 0.5, "pairwise_f1": 0.5,
        "bcubed_precision": 7 / 9, "bcubed_recall": 7 / 9, "bcubed_f1": 7 / 9,
    })
    assert all(isinstance(v, float) for v in s.values())


@pytest.mark.parametrize("pred", [[3, 3, 3, 7, 7, 0], [0, 0, 0, 1, 1, 2]])
def test_perfect_clustering_scores_one(pred):
    # Label values are arbitrary; only the partition matters.
    assert all(v == pytest.approx(1.0) for v in score(TRUTH, pred).values())


def test_all_noise():
    bp, br, bf = bcubed_prf(TRUTH, [-1] * 6)
    sizes = {"a": 3, "b": 2, "c": 1}
    assert bp == pytest.approx(1.0)
    assert br == pytest.approx(np.mean([1 / sizes[t] for t in TRUTH]))  # = 0.5
    assert br == pytest.approx(0.5)
    assert bf == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    pp, pr, pf = pairwise_prf(TRUTH, [-1] * 6)
    assert (pp, pr, pf) == pytest.approx((1.0, 0.0, 0.0))  # no predicted pairs: precision 1 by convention


def test_noise_is_never_one_shared_cluster():
    truth = ["a", "a", "a"]
    # If the three -1s were one cluster this would be perfect; as singletons recall is 1/3.
    assert bcubed_prf(truth, [-1, -1, -1]) == pytest.approx((1.0, 1 / 3, 0.5))
    assert bcubed_prf(truth, [5, 5, 5]) == pytest.approx((1.0, 1.0, 1.0))
    assert pairwise_prf(truth, [-1, -1, -1])[1] == 0.0
    # Noise items are not merged with a real cluster either.
    assert bcubed_prf(["a", "a", "b"], [0, 0, -1]) == pytest.approx((1.0, 1.0, 1.0))
    assert pairwise_prf(["a", "a", "b"], [0, 0, -1]) == pytest.approx((1.0, 1.0, 1.0))


def test_noise_as_singletons():
    labels = np.array([0, -1, 1, -1, 1])
    out = noise_as_singletons(labels)
    np.testing.assert_array_equal(out, [0, 2, 1, 3, 1])
    np.testing.assert_array_equal(labels, [0, -1, 1, -1, 1])  # input not modified
    np.testing.assert_array_equal(noise_as_singletons([-1, -1, -1]), [0, 1, 2])
    out = noise_as_singletons([7, -1, 2])  # new labels never collide with existing ones
    assert out[0] == 7 and out[2] == 2 and out[1] not in (7, 2)
