import json

from diffseg.bench.__main__ import main


def test_data_bench_json(shared_data, capsys):
    assert main(["data", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["cold_build_s"]) == {"64", "128"} and r["samples"]["64"] == 480
    assert r["warm_load_s"] > 0 and r["loader_samples_per_s"] > 0 and r["loader_samples_per_s_augmented"] > 0
