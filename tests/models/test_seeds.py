from tfvitmae.models.layers import sub_seed


def test_sub_seeds_are_repeatable_distinct_and_in_range():
    names = ["attention", "mlp", "drop_path", "dropout", "probs_dropout"]
    names += [f"layer_{i}" for i in range(32)]
    for seed in (0, 1, 12345):
        seeds = [sub_seed(seed, name) for name in names]
        assert seeds == [sub_seed(seed, name) for name in names]
        assert len(set(seeds)) == len(seeds)
        assert all(isinstance(s, int) and 0 <= s < 2**31 - 1 for s in seeds)
    # neighbouring parent seeds do not give one another's sub-seeds
    assert {sub_seed(0, n) for n in names}.isdisjoint({sub_seed(1, n) for n in names})


def test_unseeded_stays_unseeded():
    assert sub_seed(None, "attention") is None
