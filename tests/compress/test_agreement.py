import json

import pytest

from autoprune.compress.agreement import Agreement, Pair, spearman


def test_spearman_orders_and_ties():
    assert spearman([0.1, 0.2, 0.3], [1, 2, 3]) == pytest.approx(1.0)
    assert spearman([0.1, 0.2, 0.3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([0.1, 0.1, 0.3, 0.4], [1, 2, 3, 4]) == pytest.approx(0.948683, abs=1e-6)
    assert spearman([0.1, 0.1, 0.1], [1, 2, 3]) is None  # a constant proxy ranks nothing
    assert spearman([0.1, 0.2], [1, 2]) is None


def test_agreement_says_when_the_proxy_ranks_poorly_and_round_trips():
    good = Agreement([Pair(f"p{i}", i / 100, i / 200) for i in range(5)])
    assert "Spearman 1.00" in good.describe() and "poorly" not in good.describe()
    bad = Agreement([Pair(f"p{i}", i / 100, (5 - i) / 200) for i in range(5)])
    assert "ranks plans poorly" in bad.describe()
    few = Agreement([Pair("only", 0.01, 0.0)])
    assert few.spearman is None and "too few" in few.describe()
    again = Agreement.from_dict(json.loads(json.dumps(bad.to_dict())))
    assert again == bad and again.spearman == bad.spearman
    assert Agreement.from_dict(None) == Agreement()


def test_an_agreement_without_a_study_says_the_proxy_chose_nothing_and_round_trips():
    unused = Agreement([Pair("calibration level 0.5000", 0.02, 0.004)], studied=False)
    assert unused.describe().startswith("proxy agreement: not measured: no study ran")
    assert "1 plan recovered for real was scored by it" in unused.describe()
    ranked = Agreement([Pair(f"p{i}", i / 100, i / 200) for i in range(4)], studied=False)
    assert "Spearman 1.00" in ranked.describe() and "proxy chose no plan" in ranked.describe()
    again = Agreement.from_dict(json.loads(json.dumps(unused.to_dict())))
    assert again == unused and not again.studied
    # results saved before the field existed read as before: every plan was scored
    assert Agreement.from_dict({"pairs": []}).studied
