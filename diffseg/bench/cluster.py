"""``python -m diffseg.bench cluster [--json]``: a study on a real multi-node Ray cluster that loses a node.

Ray's own multi-node test cluster (``ray.cluster_utils.Cluster``: a head and two worker nodes, separate raylets on
this machine, one CPU each, every node on 127.0.0.1) and a local MLflow server with its artifact proxy. A tiny
study of three trials runs from a driver process of its own (``run_study --address``, tracking through the
server); while a trial trains on a worker node, that node is removed (its raylet killed, no graceful drain). Tune
retries the trial on another node from its last checkpoint (``FailureConfig``). Then a second study is started,
its driver killed (SIGKILL) mid-study, and continued with ``--resume --address`` on the same cluster.

Checked from the tracking server and the exports: every trial exactly once (child runs and trials rows), no
metric step logged twice, the retried trial marked (``retries``), every run's artifacts served by the server
(``mlflow-artifacts:``), and which nodes the trials ran on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Ray resolves "this node's IP" (and a 127.0.0.1 address given to ray.init) to the address that routes outside;
# with this setting (Ray's own switch for single-machine clusters) every node, the GCS address and each driver
# stay on the loopback interface
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

STUDY = """description: the cluster benchmark's tiny study (three E2 trials)
experiment: e2
fixed: {model.architecture: ensemdiff, model.base_channels: 8, model.channel_mult: [1, 2], data.resolution: 32,
        train.batch_size: 2}
grid:
  weighting:
    - {label: uniform, diffusion.weighting: uniform}
    - {label: min_snr, diffusion.weighting: min_snr, diffusion.weighting_params: {gamma: 5}}
    - {label: p2, diffusion.weighting: p2}
seeds: [0]
datasets: [synthetic-blob]
budgets:
  smoke: {train.steps: STEPS, train.val_every: 40, train.log_every: 10, eval.test_max_images: 4,
          eval.curve_points: 4, eval.curve_max_images: 3, eval.ensemble: 2, eval.steps: 2, eval.val_steps: 2,
          eval.val_max_images: 3}
"""
STEPS = 400
KILL_AT_STEP = 60  # a node (then a driver) is killed once a trial has logged this step: past its first checkpoint (40)
# batch 2 (the smoke budget's is 8): a step of this model takes 25 ms here instead of 56 ms, and training steps were
# 82 % of the trials' time; what is checked (node loss, exactly once) does not depend on it, and the kill at
# KILL_AT_STEP still leaves 140 of the test's 200 steps (3.5 s alone) to run
PROXY_SCHEME = "mlflow-artifacts:"  # an artifact URI the tracking server serves


def start_cluster(workers: int = 2):
    """A head and ``workers`` worker nodes, one CPU each, all on the loopback address; returns (cluster, nodes)."""
    from ray.cluster_utils import Cluster

    args = {"num_cpus": 1, "node_ip_address": LOOPBACK, "object_store_memory": 100 * 1024**2,
            "include_dashboard": False}
    # the head's system config reaches every node: trials at niceness 0, as on a README cluster
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={**args, "_system_config": {"worker_niceness": 0}})
    nodes = [cluster.add_node(**args) for _ in range(workers)]
    cluster.wait_for_nodes()
    return cluster, nodes


def address(cluster) -> str:
    """The head's GCS address on the loopback (``Cluster.address`` names the machine's own IP)."""
    return f"{LOOPBACK}:{cluster.gcs_address.rsplit(':', 1)[1]}"


def _driver(spec: Path, out: Path, address: str, uri: str, resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "diffseg.studies", "--study", str(spec), "--out", str(out), "--address", address,
           "--tracking-uri", uri, "--max-failures", "3", "--no-models", *(["--resume"] if resume else [])]
    log = open(out.parent / f"{out.name}{'-resume' if resume else ''}.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **LOOPBACK_ENV})


def _child_runs(client, study: str) -> list:
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string="tags.`diffseg.role` = 'trial'", max_results=500)


def _progress(client, study: str) -> list[tuple[str, str, int]]:
    """(run id, node id, last logged step) of the study's running trials."""
    from ..studies.tracking import NODE_ID_TAG

    out = []
    for r in _child_runs(client, study):
        if r.info.status == "RUNNING" and NODE_ID_TAG in r.data.tags:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")]
            out.append((r.info.run_id, r.data.tags[NODE_ID_TAG], max(steps, default=0)))
    return out


def _wait(predicate, timeout_s: float, driver: subprocess.Popen, every_s: float = 0.5):
    """``predicate()``'s first truthy value; None after ``timeout_s`` or once ``driver`` has exited (a study whose
    trials all fail at once ends in seconds: waiting the full timeout for it made a misconfigured cluster a hang)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and driver.poll() is None:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    return None


def check(client, study: str, out: Path, planned: int) -> dict:
    """Exactly-once facts of a finished study, from the tracking server and the exports."""
    import pandas as pd

    from ..folder import StudyFolder

    runs = _child_runs(client, study)
    trials = pd.read_parquet(StudyFolder(out).export_table(study, "trials"))
    history = pd.read_parquet(StudyFolder(out).export_table(study, "history"))
    dup = int(history.duplicated(["trial_id", "step"]).sum())
    for r in runs:
        for key in r.data.metrics:
            dup += sum(n - 1 for n in Counter(m.step for m in client.get_metric_history(r.info.run_id, key)).values())
    exp = client.get_experiment_by_name(study)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`diffseg.role` = 'study'")
    return {"planned": planned, "trials": int(trials.trial_id.nunique()), "trial_rows": len(trials),
            "child_runs": len(runs), "ok": int((trials.status == "ok").sum()), "duplicated_steps": dup,
            "retried": int((trials.retries.fillna(0) > 0).sum()),
            "nodes_used": sorted(trials.node_id.dropna().unique().tolist()),
            "node_ips": sorted(trials.node_ip.dropna().unique().tolist()),
            "local_artifact_runs": sum(not r.info.artifact_uri.startswith(PROXY_SCHEME) for r in [*runs, *parents])}


def _logs(tmp: Path) -> dict[str, str]:
    return {p.name: p.read_text()[-2000:] for p in sorted(tmp.glob("*.log"))}


def run(steps: int = STEPS) -> dict:
    from mlflow.tracking import MlflowClient

    from ..studies import local_server

    t0 = time.monotonic()
    os.environ.update(LOOPBACK_ENV)
    with tempfile.TemporaryDirectory(prefix="diffseg-cluster-") as tmp:
        tmp = Path(tmp)
        spec = tmp / "cluster_bench.yaml"
        spec.write_text(STUDY.replace("STEPS", str(steps)))
        port = local_server.free_port()
        server = local_server.start(tmp / "mlflow.db", tmp / "artifacts", port)
        uri = f"http://{LOOPBACK}:{port}"
        client = MlflowClient(uri)
        cluster, workers = start_cluster(2)
        try:
            nodes = 1 + len(workers)
            worker_ids = {w.node_id: w for w in workers}
            # 1. a worker node dies under its trial
            out = tmp / "node_loss"
            driver = _driver(spec, out, address(cluster), uri)
            victim = _wait(lambda: next((p for p in _progress(client, spec.stem)
                                         if p[1] in worker_ids and p[2] >= KILL_AT_STEP), None), 600, driver)
            if victim:
                cluster.remove_node(worker_ids[victim[1]], allow_graceful=False)
            rc = driver.wait(timeout=900)
            node_loss = {"rc": rc, "node_killed": victim is not None, "killed_at_step": victim[2] if victim else None,
                         **check(client, spec.stem, out, 3)}
            # 2. the driver dies, the cluster stays: --resume --address finishes the study once
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK, object_store_memory=100 * 1024**2)
            cluster.wait_for_nodes()
            spec2 = tmp / "cluster_bench_resume.yaml"
            spec2.write_text(spec.read_text())
            out2 = tmp / "driver_loss"
            driver = _driver(spec2, out2, address(cluster), uri)
            seen = _wait(lambda: any(p[2] >= KILL_AT_STEP for p in _progress(client, spec2.stem)), 600, driver)
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
            rc2 = _driver(spec2, out2, address(cluster), uri, resume=True).wait(timeout=900)
            driver_loss = {"rc": rc2, "driver_killed": bool(seen), **check(client, spec2.stem, out2, 3)}
            logs = _logs(tmp)
        except Exception as exc:  # e.g. a driver that wrote no exports: its log says why
            raise RuntimeError(f"cluster bench: {exc!r}; the drivers' logs (last 2000 characters each): "
                               f"{_logs(tmp)}") from exc
        finally:
            cluster.shutdown()
            local_server.stop(server)
    r = {"nodes": nodes, "nodes_used": len(node_loss["nodes_used"]), "node_killed": node_loss["node_killed"],
         "trials": node_loss["trials"], "child_runs": node_loss["child_runs"],
         "duplicated_steps": node_loss["duplicated_steps"] + driver_loss["duplicated_steps"],
         "retried": node_loss["retried"],
         "local_artifact_runs": node_loss["local_artifact_runs"] + driver_loss["local_artifact_runs"],
         "wall_s": time.monotonic() - t0, "node_loss": node_loss, "driver_loss": driver_loss}
    if node_loss["rc"] != 0 or driver_loss["rc"] != 0:
        r["logs"] = logs
    return r


def table(r: dict) -> str:
    n, d = r["node_loss"], r["driver_loss"]
    return "\n".join([
        f"cluster: {r['nodes']} nodes (head + 2 workers, 1 CPU each, 127.0.0.1), MLflow server with artifact proxy; "
        f"{r['wall_s']:.0f} s",
        f"  node loss: worker killed {'at step ' + str(n['killed_at_step']) if n['node_killed'] else 'NOT'}; "
        f"{n['trials']}/{n['planned']} trials once ({n['child_runs']} child runs, {n['ok']} ok), retried "
        f"{n['retried']}, trials ran on {len(n['nodes_used'])} nodes {n['node_ips']}, duplicated steps "
        f"{n['duplicated_steps']}, local artifact runs {n['local_artifact_runs']}, exit {n['rc']}",
        f"  driver loss: driver killed {'yes' if d['driver_killed'] else 'NO'}, --resume --address: "
        f"{d['trials']}/{d['planned']} trials once ({d['child_runs']} child runs, {d['ok']} ok), duplicated steps "
        f"{d['duplicated_steps']}, exit {d['rc']}",
    ])


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
