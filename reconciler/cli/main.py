"""The ``reconciler`` command: parsing and printing only. Exit codes: 0 ok, 1 a finding
(invalid manifests, failed verification, a failed reconcile), 2 usage or environment error,
3 a bug (an exception nothing turned into a refusal: one line, the traceback at debug level)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from reconciler import __version__
from reconciler.cancel import CancelToken, cancel_on_signals
from reconciler.cli.exits import EXIT_BUG, EXIT_FINDING, EXIT_OK, EXIT_USAGE
from reconciler.errors import Cancelled, NeedsOperator, ReconcilerError, UsageError
from reconciler.logs import FORMATS, LEVELS, configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    # Commands that keep running (an agent, a server, the demo) say what they do; one-shot commands
    # print their answer and log only what went wrong.
    configure_logging(getattr(args, "log_level", "warning"))
    try:
        return args.handler(args)
    except (UsageError, NeedsOperator) as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return EXIT_FINDING
    except Exception as exc:  # noqa: BLE001 -- the last net: a user sees a sentence, not a traceback
        logging.getLogger("reconciler").debug("unexpected error", exc_info=True)
        print(f"reconciler: unexpected {type(exc).__name__}: {exc}; this is a bug, please report it with the "
              "command that caused it", file=sys.stderr)
        return EXIT_BUG


def _parser() -> argparse.ArgumentParser:
    from reconciler.cli.artifact_check import add_artifact_arguments

    parser = argparse.ArgumentParser(prog="reconciler", description="GitOps for machine-learning model fleets.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a fleet repo: schema and references")
    validate.add_argument("path", nargs="?", default=".", type=Path)
    validate.add_argument("--format", choices=["text", "json", "github"], default="text")
    validate.add_argument("--artifacts", action="store_true",
                          help="also check what the sites would of each version deployments ask for")
    add_artifact_arguments(validate)
    validate.set_defaults(handler=cmd_validate)

    from reconciler.cli.plan import add_subcommands as add_plan_command

    add_plan_command(commands)

    run = commands.add_parser(
        "run", help="run a site agent: converge and serve", epilog=RUN_EXAMPLE,
        description="Run one site's agent: poll the fleet repo, verify and validate the models planned for\n"
                    "this site, roll them out, serve them, and write the site's status back to Git.\n"
                    "Options given here override the same settings of --config.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", type=Path, metavar="SITE_YAML",
                     help="site.yaml with the site's local settings (paths in it are relative to its folder)")
    run.add_argument("--repo", help="fleet repo URL or path (required without --config)")
    run.add_argument("--branch", help="branch of the fleet repo to follow (default: main)")
    run.add_argument("--site", help="this site's name, as in the fleet's Site manifests (required without --config)")
    run.add_argument("--state", type=Path, help="state directory: verified models, state.json, git cache "
                                                "(required without --config)")
    run.add_argument("--listen", metavar="HOST:PORT",
                     help="serve the models (Open Inference Protocol), metrics and flags here (default: do not serve)")
    run.add_argument("--grpc-listen", metavar="HOST:PORT",
                     help="also serve the models over gRPC (Open Inference Protocol) here (default: no gRPC)")
    run.add_argument("--interval", help="poll interval, e.g. 30s or 5m (default: 30s)")
    run.add_argument("--trust-key", dest="trust_keys", action="append", type=Path, default=[], metavar="PEM",
                     help="public key trusted to sign artifacts (repeatable; default: the keys of --config, none "
                          "without it, and then every artifact is refused)")
    run.add_argument("--accept-history", metavar="COMMIT",
                     help="accept this commit although it does not descend from the last applied one (after a "
                          "history rewrite an operator checked)")
    run.add_argument("--once", action="store_true",
                     help="reconcile once, print the status record and exit (1 if it failed; default: run until "
                          "SIGTERM or Ctrl-C); like the agent it applies the plan and publishes the site's status "
                          "record to the fleet, which the other sites' gates read")
    run.add_argument("--dry-run", action="store_true",
                     help="with --once: print what the site would do, and write nothing anywhere")
    run.add_argument("--summary-repo", metavar="URL",
                     help="site.yaml's summaryRepo: the site's gates read each gated deployment's reports from "
                          "the roll-ups there, and the agent writes its entry there (a dry run only reads)")
    run.add_argument("--log-level", choices=LEVELS, default="info", help="least severe log lines shown (default: info)")
    run.add_argument("--log-format", choices=FORMATS, default="text",
                     help="text for people, json for log pipelines: one object a line (default: text)")
    run.set_defaults(handler=cmd_run)

    serve = commands.add_parser("serve", help="serve a state directory's active models without reconciling")
    serve.add_argument("--state", type=Path, required=True)
    serve.add_argument("--listen", required=True)
    serve.add_argument("--grpc-listen", metavar="HOST:PORT", help="also serve the models over gRPC here")
    serve.set_defaults(handler=cmd_serve, log_level="info")

    from reconciler.cli.nats_options import add_nats_reading

    status = commands.add_parser("status", help="the fleet matrix from the sites' status records in Git or NATS")
    status.add_argument("--repo", default=".", help="fleet repo URL or path (status refs live there; a clone's "
                        "are fetched from its origin)")
    status.add_argument("--branch", default="main", help="the branch whose Sites make the inventory")
    status.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    status.add_argument("--drift", action="store_true", help="sites x features drift, worst first, and the pooled "
                        "drift per model version (markdown prints as text)")
    status.add_argument("--evaluation", action="store_true", help="each site's scores of each version on its own "
                        "labeled data, and the example-weighted fleet metric (markdown prints as text)")
    status.add_argument("--inventory", action="store_true",
                        help="what each site runs on (OS, CPU, memory, onnxruntime and its providers, local facts)")
    add_nats_reading(status, "the records")
    from reconciler.cli.summaries import add_summary_reading

    add_summary_reading(status, ": each site's report on each deployment with a rollout, nothing else of its record")
    status.set_defaults(handler=cmd_status)

    demo = commands.add_parser("demo", help="a local fleet converging from a local Git repo")
    demo.add_argument("--sites", type=int, help="start only this many sites (default: every site of the fleet)")
    demo.add_argument("--workdir", type=Path, help="keep the demo's files here (default: a temp dir)")
    demo.add_argument("--keep-running", action="store_true", help="keep the fleet up until Ctrl-C")
    demo.set_defaults(handler=cmd_demo, log_level="info")

    from reconciler.cli.keys import add_subcommands as add_signing_commands

    add_signing_commands(commands)  # keygen, sign, verify
    from reconciler.cli.audit import add_subcommands as add_audit_commands

    add_audit_commands(commands)  # audit, report
    from reconciler.cli.scaffold import add_subcommands as add_release_commands

    add_release_commands(commands)  # init, schema, add-version
    from reconciler.cli.retry import add_subcommands as add_rollout_commands

    add_rollout_commands(commands)  # rollout retry
    from reconciler.cli.batch import add_subcommands as add_batch_commands

    add_batch_commands(commands)  # batch run

    from reconciler.cli.drift import add_subcommands as add_drift_commands

    add_drift_commands(commands)  # profile

    from reconciler.cli.push import add_subcommands as add_push_commands

    add_push_commands(commands)  # push

    from reconciler.cli.enroll import add_subcommands as add_enroll_commands

    add_enroll_commands(commands)  # enroll

    from reconciler.cli.notify import add_subcommands as add_notify_commands

    add_notify_commands(commands)  # notify

    from reconciler.cli.shards import add_subcommands as add_shard_commands

    add_shard_commands(commands)  # shards
    return parser


RUN_EXAMPLE = """example:
  reconciler run --repo https://git.example.com/fleet.git --site store-berlin-01 \\
      --state /var/lib/reconciler --listen 127.0.0.1:8080 --trust-key /etc/reconciler/fleet.pub

  or with every setting in a file (see README.md, "Configuring a site"):
  reconciler run --config /etc/reconciler/site.yaml
"""


def cmd_validate(args: argparse.Namespace) -> int:
    from reconciler.cli.artifact_check import ArtifactOptions
    from reconciler.cli.validate import render, validate_path

    options = ArtifactOptions.from_args(args)
    loaded, findings = validate_path(args.path, options if args.artifacts else None)
    print(render(findings, args.format, files=loaded.files, documents=loaded.documents).rstrip("\n"))
    return EXIT_FINDING if any(f.severity == "error" for f in findings) else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from reconciler.agent.config import build_site_config, load_site_config

    overrides = {"repo": args.repo, "branch": args.branch, "site": args.site,
                 "state": str(args.state) if args.state else None, "listen": args.listen,
                 "grpcListen": args.grpc_listen, "interval": args.interval, "acceptHistory": args.accept_history,
                 "summaryRepo": args.summary_repo,
                 "trustKeys": [str(p.resolve()) for p in args.trust_keys]}
    if args.config:
        config = load_site_config(args.config, overrides)
    else:
        missing = [flag for flag, key in (("--repo", "repo"), ("--site", "site"), ("--state", "state"))
                   if not overrides[key]]
        if missing:
            raise UsageError(f"run needs --config, or {', '.join(missing)}")
        config = build_site_config({k: v for k, v in overrides.items() if v not in (None, [])})
    if args.dry_run:
        if not args.once:
            raise UsageError("--dry-run goes with --once")
        from reconciler.cli.trial import dry_run

        return dry_run(config)
    configure_logging(args.log_level, args.log_format, config.site)
    return run_agent(config, once=args.once)


def run_agent(config, once: bool) -> int:
    from reconciler.agent.sdnotify import QUIET_STEP_SECONDS, keep_watchdog, notify
    from reconciler.agent.statedir import StateDir
    from reconciler.agent.telemetry import SiteTelemetry
    from reconciler.agent.wiring import build_agent, load_trust_roots, serving

    wake, stop, telemetry = threading.Event(), CancelToken(), SiteTelemetry(config.site)
    cancel_on_signals(stop, also=wake)
    state_dir = StateDir(config.state)
    state_dir.lock()  # before the port opens: a second agent on this state says so, and serves nothing
    trust_roots = load_trust_roots(config)  # so does a trust key that cannot be read
    with serving(config.listen, config.site, wake, telemetry, config.grpc_listen,
                 config.execution_providers) as (registry, metrics):
        agent = build_agent(config, registry, metrics, wake, stop, telemetry, state_dir=state_dir,
                            trust_roots=trust_roots)
        agent.start()
        notify("READY=1")  # serving the last good state: systemd's Type=notify may start what waits on us
        quiet_bound = config.interval_seconds * (1 + config.jitter) + QUIET_STEP_SECONDS
        keep_watchdog(lambda: telemetry.last_beat, quiet_bound, stop)
        try:
            if once:
                result = agent.reconcile_once()
                if isinstance(result.error, Cancelled):
                    return EXIT_OK  # asked to stop: not a failed reconcile
                if result.record is not None:
                    print(json.dumps(result.record.model_dump(mode="json"), indent=2))
                return EXIT_FINDING if result.error or (result.record and result.record.state != "success") else EXIT_OK
            agent.run(stop)
            return EXIT_OK
        finally:
            notify("STOPPING=1")
            agent.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    from reconciler.agent.config import build_site_config
    from reconciler.agent.wiring import serve_last_good, serving

    site = _site_of_state(args.state)
    config = build_site_config({"site": site, "repo": "-", "state": str(args.state), "listen": args.listen,
                                **({"grpcListen": args.grpc_listen} if args.grpc_listen else {})})
    with serving(config.listen, site, grpc_address=config.grpc_listen) as (registry, metrics):
        stop = CancelToken()
        cancel_on_signals(stop)
        serve_last_good(args.state, site, registry, metrics)
        stop.wait()
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from reconciler.cli.drift import status_drift
    from reconciler.cli.nats_options import nats_settings
    from reconciler.history.nats_records import records_from_nats
    from reconciler.history.origin import status_records
    from reconciler.history.timeline import open_fleet
    from reconciler.manifests.loader import load_tree
    from reconciler.status.matrix import build_matrix, render_markdown, render_text

    if args.summary_repo:
        from reconciler.cli.summaries import status_from_summaries

        return status_from_summaries(args)
    nats = nats_settings(args, "nats-", records_bucket=args.records_bucket) if args.nats_servers else None
    with open_fleet(args.repo, args.branch) as opened:
        fleet = load_tree(opened.source.files(opened.head)).repo
        if nats is not None:
            (records, ignored), note = records_from_nats(nats, fleet), None
        else:
            records, note, ignored = status_records(opened, args.repo, fleet)
        drift = status_drift(fleet, opened, records, args.format) if args.drift else None
    if note:
        print(f"reconciler: {note}", file=sys.stderr)
    if drift is not None:
        print(drift)
        return EXIT_OK
    if args.evaluation:
        from reconciler.status import evaluation_view

        evaluations = evaluation_view.site_evaluations({site: r.deployments for site, r in records.items()})
        print(json.dumps(evaluation_view.to_json(evaluations), indent=2) if args.format == "json"
              else evaluation_view.render_text(evaluations))
        return EXIT_OK
    if args.inventory:
        from reconciler.cli.inventory import render_inventory

        print(render_inventory(records, args.format))
        return EXIT_OK
    matrix = build_matrix(records, fleet.sites, datetime.now(UTC), fleet.spec.staleAfter)
    if args.format == "json":
        print(json.dumps(matrix.to_json() | {"ignored": [i.to_json() for i in ignored]}, indent=2))
    else:
        print(render_markdown(matrix) if args.format == "markdown" else render_text(matrix))
        print("".join(f"ignored: {i.why} (site {i.site}, status commit {i.commit[:12]})\n" for i in ignored), end="")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from reconciler.devtools.demo import run_demo

    return run_demo(sites=args.sites, workdir=args.workdir, keep_running=args.keep_running)


def _site_of_state(state: Path) -> str:
    try:
        return json.loads((state / "state.json").read_text())["site"]
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{state} holds no readable state.json: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
