"""A study on a real multi-node Ray cluster (Ray's own test cluster: a head and two worker nodes on this machine,
127.0.0.1 only) that loses a worker node mid-trial and then its driver, tracked through an MLflow server with its
artifact proxy: ``python -m diffseg.bench cluster`` run as the test."""

import pytest

from diffseg.bench import cluster


@pytest.mark.slow(seconds=187)
def test_a_study_survives_a_lost_node_and_a_lost_driver():
    r = cluster.run(steps=200)  # half the benchmark's trials: still killed mid-trial (at KILL_AT_STEP of 200)
    n, d = r["node_loss"], r["driver_loss"]
    assert n["rc"] == 0 and d["rc"] == 0, r.get("logs")
    assert r["nodes"] == 3 and r["node_killed"] and d["driver_killed"]
    assert r["nodes_used"] >= 2, "trials ran on more than one node"
    assert set(n["node_ips"]) == set(d["node_ips"]) == {"127.0.0.1"}, "every node on the loopback interface"
    for part in (n, d):  # every trial exactly once, in MLflow and in Parquet, all finished
        assert part["trials"] == part["trial_rows"] == part["child_runs"] == part["ok"] == part["planned"]
    assert n["retried"] >= 1, "the trial of the killed node was retried (retries column)"
    assert d["retried"] >= 1, "the resumed study restarted the trials its dead driver left"
    assert r["duplicated_steps"] == 0 and r["local_artifact_runs"] == 0


def test_a_failing_cluster_phase_raises_with_the_drivers_logs(monkeypatch):
    """A driver that leaves no exports (the run's check fails) shows its log in the error, not only the missing
    file (the cluster, the server and the drivers replaced: only the bench's own error path runs)."""
    from diffseg.studies import local_server

    class Exited:
        pid = 0

        def poll(self):
            return 2

        def wait(self, timeout=None):
            return 2

    class NoCluster:
        gcs_address = "127.0.0.1:1"

        def shutdown(self):
            pass

    def driver(spec, out, address, uri, resume=False):
        (out.parent / f"{out.name}.log").write_text("refused: the state changed after it was sealed")
        return Exited()

    def check(client, study, out, planned):
        raise FileNotFoundError(out / "exports")

    monkeypatch.setattr(local_server, "start", lambda *a, **k: None)
    monkeypatch.setattr(local_server, "stop", lambda *a, **k: None)
    monkeypatch.setattr(cluster, "start_cluster", lambda n: (NoCluster(), []))
    monkeypatch.setattr(cluster, "_driver", driver)
    monkeypatch.setattr(cluster, "check", check)
    with pytest.raises(RuntimeError, match=r"node_loss\.log.*refused: the state changed after it was sealed"):
        cluster.run(steps=2)
