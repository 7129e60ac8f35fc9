from autoprune.plan import GroupPlan, LayerPlan, Plan


def test_json_round_trip_keeps_everything():
    plan = Plan()
    plan.set_group(
        GroupPlan(
            "filter_prune",
            "conv1",
            ["conv1", "layer1.0.conv2"],
            16,
            removed=[1, 3, 5],
            materialized=[1, 3, 5],
            criterion="l2",
        )
    )
    plan.set_layer(
        LayerPlan("block_prune", "fc", total=40, removed=10, criterion="l2", block=(4, 4))
    )
    plan.notes.append("a note")
    again = Plan.from_json(plan.to_json())
    assert again.to_dict() == plan.to_dict()
    assert again.groups["conv1"].sparsity == 3 / 16
    assert again.groups["conv1"].physical
    assert again.layers[0].block == (4, 4)
    assert again.sparsities() == {"conv1": 3 / 16, "fc": 0.25}


def test_group_in_tensors_and_surviving():
    g = GroupPlan("filter_prune", "c", ["c"], 6, removed=[0, 2, 4], materialized=[0])
    assert not g.physical
    assert g.in_tensors == [1, 2, 3, 4, 5]
    assert g.surviving == [1, 3, 5]


def test_version_1_plans_still_read():
    old = {
        "format": "autoprune.plan/1",
        "groups": [
            {
                "op": "filter_prune",
                "root": "c",
                "layers": ["c"],
                "total": 4,
                "removed": [1],
                "gone": [1],
                "criterion": "l1",
            }
        ],
    }
    assert Plan.from_dict(old).groups["c"].materialized == [1]


def test_set_layer_replaces_same_op_and_layer():
    plan = Plan()
    plan.set_layer(LayerPlan("prune", "fc", 10, 5))
    plan.set_layer(LayerPlan("prune", "fc", 10, 7))
    plan.set_layer(LayerPlan("block_prune", "fc", 4, 1, block=(2, 2)))
    assert [(e.op, e.removed) for e in plan.layers] == [("prune", 7), ("block_prune", 1)]
