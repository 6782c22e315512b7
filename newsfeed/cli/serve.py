"""`newsfeed serve [build]`, `newsfeed feed USER_ID`: the feed on Ray Serve, and a look at one user's feed."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import DataDirOption, HomeOption, RegistryOption, StateOption, StoreOption, console, fail
from serving.ingress import DEFAULT_INGRESS, INGRESSES

app = typer.Typer(help="Serve feeds on Ray Serve (local Ray), or write the Serve config a RayService embeds.",
                  invoke_without_command=True)
DEFAULT_PORT = 8000
PortOption = Annotated[int, typer.Option(help="HTTP port.", min=1, max=65535)]
ModeOption = Annotated[str, typer.Option(help="fused (one deployment) | chained (one per stage group).")]
ReplicasOption = Annotated[int, typer.Option(help="Replicas of each deployment (the floor, when autoscaling).", min=1)]
MaxReplicasOption = Annotated[int | None, typer.Option(help="Autoscale each deployment up to this many replicas "
                                                            "[default: no autoscaling].", min=1)]
CpusOption = Annotated[float, typer.Option(help="CPUs each replica reserves.", min=0.01)]
ClockOption = Annotated[str | None, typer.Option(
    help="Request time: wall | replayed (the data's end, from now on) | simulated (set by `newsfeed simulate` "
         "through PUT /v1/clock) | auto: replayed for data that ended over a day ago [default: NEWSFEED_CLOCK, "
         "else auto].")]


def _settings(home=None, data_dir=None, **options):
    """The serving settings of the command's options (``options``: ServingSettings fields)."""
    from pydantic import ValidationError

    from newsfeed.config import Paths
    from newsfeed.errors import option_message
    from serving.settings import ServingSettings

    paths = Paths.resolve(home, data_dir)
    try:
        return ServingSettings(home=str(paths.home.resolve()), data_dir=str(paths.data_dir.resolve()), **options)
    except ValidationError as err:
        raise fail(option_message(err)) from None


def _restart_replayed_clock(settings) -> None:
    """A replayed clock starts again at the data's end with this service (every replica, and
    `newsfeed publish`, read its start from the user-state store)."""
    from newsfeed.feed.clock import replay_started
    from newsfeed.feed.user_state import open_user_state

    replay_started(open_user_state(Path(settings.home), settings.state), Path(settings.data_dir), restart=True)


def _check_ready_to_serve(settings) -> None:
    """What serving needs, before Ray starts: data, and a champion of each model with its index."""
    from newsfeed.registry import RANKER, TWO_TOWER, INDEX_TAG, Registry, RegistryError

    if not (Path(settings.data_dir) / "posts.parquet").exists():
        raise fail(f"{settings.data_dir}: no data to serve (run `newsfeed data generate` and `newsfeed pipeline run`)")
    try:
        registry = Registry.open(Path(settings.home), settings.registry)
        registry.version(RANKER, "champion")
        if not registry.version(TWO_TOWER, "champion").tags.get(INDEX_TAG):
            raise RegistryError(f"{TWO_TOWER} champion has no index: run `newsfeed index build --model champion`")
    except RegistryError as err:
        raise fail(f"{err} (train and register models first: `newsfeed pipeline run`)") from None
    from newsfeed.errors import NewsfeedError
    from newsfeed.feed.user_state import open_user_state

    try:  # replicas start degraded without it; a command that starts them says so first
        open_user_state(Path(settings.home), settings.state, check=True)
    except NewsfeedError as err:
        raise fail(str(err)) from None


@app.callback()
def serve(
    ctx: typer.Context,
    port: PortOption = DEFAULT_PORT, host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    mode: ModeOption = "fused", replicas: ReplicasOption = 1, replica_cpus: CpusOption = 0.5,
    max_replicas: MaxReplicasOption = None, home: HomeOption = None, data_dir: DataDirOption = None,
    store: StoreOption = None, registry: RegistryOption = None, state: StateOption = None, clock: ClockOption = None,
    window_days: Annotated[float | None, typer.Option(
        help="Posts older than this many days leave each replica's corpus and indexes [default: 14].", min=0.01)] = None,
    max_ongoing_requests: Annotated[int | None, typer.Option(
        help="Requests a replica runs at once, more wait in the router [default: 1 fused, Ray's own chained].",
        min=1)] = None,
    ingress: Annotated[str, typer.Option(
        help="haproxy (Ray Serve's HAProxy ingress, throughput-optimised) | proxy (Ray Serve's Python proxy).")]
    = DEFAULT_INGRESS,
) -> None:
    """Start the feed service on a local Ray and stay in the foreground until Ctrl-C; ready
    when `GET /healthz` answers."""
    options = {"home": home, "data_dir": data_dir, "store": store, "registry": registry, "state": state, "mode": mode,
               "replicas": replicas, "replica_cpus": replica_cpus, "max_replicas": max_replicas, "clock": clock,
               "max_ongoing_requests": max_ongoing_requests,
               **({"window_days": window_days} if window_days is not None else {})}
    if ctx.invoked_subcommand is not None:
        ctx.obj = options
        return
    settings = _settings(**options)
    if ingress not in INGRESSES:
        raise fail(f"--ingress {ingress!r}: expected one of {', '.join(INGRESSES)}")
    _check_ready_to_serve(settings)
    _restart_replayed_clock(settings)
    import signal

    from serving.local import LocalServer

    def stop(*_):
        raise KeyboardInterrupt

    # `kill -INT` stops it like Ctrl-C, also as a background job (which starts with SIGINT
    # ignored); SIGTERM too, once Ray has started (Ray's own handler would dump a stack).
    signal.signal(signal.SIGINT, stop)
    server = LocalServer(settings, host, port, ingress=ingress)
    try:
        server.start()
        signal.signal(signal.SIGTERM, stop)
        console.print(f"serving feeds at {server.url} ({settings.mode}, {ingress} ingress); Ctrl-C stops",
                      highlight=False)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.stop()


@app.command()
def build(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the Serve config.")] = Path(
        "serve-config.yaml"),
) -> None:
    """Write the Ray Serve config (the `serveConfigV2` a KubeRay RayService embeds), checked
    against Ray's own schema. Options before `build` (--mode, --replicas, --home ...) go into it."""
    from serving.config import write_serve_config

    settings = _settings(**(ctx.obj or {}))
    path = write_serve_config(settings, output)
    scaling = (f"{settings.replicas}-{settings.max_replicas} replicas (autoscaling)" if settings.max_replicas
               else f"{settings.replicas} replica(s)")
    console.print(f"wrote {path} ({settings.mode}, {scaling} per deployment)")


def feed(
    user_id: Annotated[int, typer.Argument(help="The user whose feed to show.", min=0)],
    limit: Annotated[int, typer.Option(help="Posts to show.", min=1, max=200)] = 10,
    url: Annotated[str, typer.Option(help="The feed service.")] = f"http://127.0.0.1:{DEFAULT_PORT}",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the service to come up.", min=0)] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw response.")] = False,
) -> None:
    """One user's feed from a running service (`newsfeed serve`), as a table."""
    from rich.table import Table

    url = url.rstrip("/")
    deadline = time.monotonic() + wait
    while True:
        try:
            body = json.dumps({"user_id": user_id, "limit": limit}).encode()
            request = urllib.request.Request(f"{url}/v1/feed", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as reply:
                response = json.loads(reply.read())
            break
        except urllib.error.HTTPError as err:
            raise fail(f"{url}/v1/feed answered {err.code}: {err.read().decode()[:300]}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if time.monotonic() >= deadline:
                reason = getattr(err, "reason", err)
                raise fail(f"cannot reach the feed service at {url}: {reason} (is `newsfeed serve` running?)") from None
            time.sleep(1)
    if as_json:
        console.print_json(json.dumps(response))
        return
    table = Table(title=f"feed of user {user_id}: arm {response['arm']}, two-tower v"
                        f"{response['model_versions'].get('two_tower')}, ranker v{response['model_versions'].get('ranker')}")
    for column in ("#", "post", "author", "topic", "source", "score"):
        table.add_column(column, justify="right" if column in ("#", "post", "author", "score") else "left")
    for item in response["items"]:
        score = "" if item["score"] is None else f"{item['score']:.3f}"
        table.add_row(str(item["position"] + 1), str(item["post_id"]), str(item["author_id"]), item.get("topic", ""),
                      item["source"], score)
    if response["degraded"]:
        table.caption = "degraded: " + "; ".join(response["degraded"])
    console.print(table)
