"""A stand-in for Slurm's sbatch, squeue, scancel and srun (`python fake_slurm.py sbatch ARGS...`): just enough for
submitit and harness/executors/slurm.py on a machine without Slurm. Jobs run at once as local processes; state lives
in $FAKE_SLURM_DIR. $FAKE_SLURM_LOSE: array task ids ("N_i") sbatch accepts and never runs (a node that died).
$FAKE_SLURM_DELAY: seconds a job waits before it starts (queued). The real thing: tests/slurm (.ci/slurm.sh)."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_DIR"])


def sbatch(script_path: str) -> None:
    script = Path(script_path).read_text()
    counter = STATE / "next"
    job = int(counter.read_text()) if counter.exists() else 100
    counter.write_text(str(job + 1))
    array = re.search(r"#SBATCH --array=(\d+)-(\d+)", script)
    tasks = range(int(array[1]), int(array[2]) + 1) if array else [None]
    lose = os.environ.get("FAKE_SLURM_LOSE", "").split(",")
    for task in tasks:
        job_id = str(job) if task is None else f"{job}_{task}"
        if job_id in lose:
            continue
        env = os.environ | {"SLURM_JOB_ID": str(job), "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1",
                            "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "localhost", "SLURM_PROCID": "0",
                            "SLURM_LOCALID": "0"}
        if task is not None:
            env |= {"SLURM_ARRAY_JOB_ID": str(job), "SLURM_ARRAY_TASK_ID": str(task)}
        delay = os.environ.get("FAKE_SLURM_DELAY", "0")
        proc = subprocess.Popen(["bash", "-c", f"sleep {delay}; exec bash {script_path}"], env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (STATE / f"{job_id}.pid").write_text(str(proc.pid))
    print(f"Submitted batch job {job}")


def squeue() -> None:
    for pid_file in sorted(STATE.glob("*.pid")):
        pid = int(pid_file.read_text())
        try:
            alive = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            alive = False
        if alive:
            print(pid_file.stem, "RUNNING")


def scancel(job_ids: list[str]) -> None:
    for job_id in job_ids:
        try:
            os.killpg(int((STATE / f"{job_id}.pid").read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def srun(args: list[str]) -> None:
    env = os.environ
    names = {"%A": env.get("SLURM_ARRAY_JOB_ID", ""), "%a": env.get("SLURM_ARRAY_TASK_ID", ""), "%t": "0",
             "%j": env["SLURM_JOB_ID"]}
    files = {}
    while args[0].startswith("--"):
        option = args.pop(0)
        if option in ("--output", "--error"):
            path = args.pop(0)
            for tag, value in names.items():
                path = path.replace(tag, value)
            files[option] = open(path, "a")
    sys.exit(subprocess.run(args, stdout=files.get("--output"), stderr=files.get("--error")).returncode)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "sbatch":
        sbatch(args[-1])
    elif command == "squeue":
        squeue()
    elif command == "scancel":
        scancel(args)
    elif command == "srun":
        srun(args)
