"""List, inspect or stop the jobs of a Ray cluster (submitted with `python -m pipelines submit`).

    python -m pipelines jobs --address http://HOST:8265                # list
    python -m pipelines jobs --address http://HOST:8265 stop raysubmit_XYZ
    python -m pipelines jobs --address http://HOST:8265 logs raysubmit_XYZ
"""
import os

NAME = "jobs"
HELP = "list, show logs of or stop jobs on a Ray cluster"


def add_arguments(p):
    from pipelines.cluster.jobs import DEFAULT_ADDRESS

    p.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", DEFAULT_ADDRESS),
                   help=f"job API URL of the cluster's head (default $RAY_API_SERVER_ADDRESS or {DEFAULT_ADDRESS})")
    p.add_argument("action", nargs="?", default="list", choices=("list", "stop", "logs", "status"))
    p.add_argument("job_id", nargs="?", default=None, help="job id (for stop / logs / status)")


def run(args):
    from pipelines.cluster import jobs

    jobs.check_address(args.address)
    if args.action == "list":
        rows = jobs.list_jobs(args.address)
        if not rows:
            print("no jobs")
        for r in sorted(rows, key=lambda r: r["start_time"] or 0):
            print(f"{r['job_id']:<28} {r['status']:<10} {r['entrypoint']}")
        return 0
    if not args.job_id:
        raise ValueError(f"jobs {args.action} needs a job id")
    c = jobs.client(args.address)
    if args.action == "stop":
        stopped = jobs.stop_job(args.address, args.job_id)
        print(f"job {args.job_id}: {'stop requested' if stopped else 'already finished'}")
    elif args.action == "logs":
        print(c.get_job_logs(args.job_id), end="")
    else:
        print(f"job {args.job_id} {c.get_job_status(args.job_id).value}")
    return 0
