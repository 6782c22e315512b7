"""`newsfeed experiment set | show | report | decide | promote | rollback | simulate`: the arms that split
feed traffic, and how each arm did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsfeed.cli.common import HomeOption, StateOption, console, fail
from newsfeed.errors import first_line, NewsfeedError

app = typer.Typer(help="Experiment arms (traffic shares, models, weights, re-rankers); per-arm reports, promote, "
                       "roll back.", no_args_is_help=True)


def _store(home, state: str | None = None):
    from newsfeed.config import Paths
    from newsfeed.feed.experiments import ExperimentStore

    return ExperimentStore.open(Paths.resolve(home).home, state)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise fail(f"{option} {value!r}: expected NAME=VALUE")
        out[name] = rest
    return out


SinceVersionOption = Annotated[int | None, typer.Option(
    "--since-version", min=0, help="Only traffic served under this experiment version or a later one (a canary's "
                                   "own days) [default: all].")]


@app.command("set")
def set_experiment(
    arm: Annotated[list[str], typer.Option("--arm", help="NAME=PERCENT; repeat per arm. A new arm serves the "
                                                          "challenger models unless --model says otherwise.")] = [],
    model: Annotated[list[str], typer.Option("--model", help="NAME=ALIAS_OR_VERSION for both models of an arm.")] = [],
    shadow: Annotated[str | None, typer.Option(help="Arm (share 0) to score beside every request; '' for none.")] = None,
    salt: Annotated[str | None, typer.Option(help="New assignment salt (reshuffles users).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A whole experiment as YAML.")] = None,
    home: HomeOption = None,
    state: StateOption = None,
) -> None:
    """Change the experiment; running servers on this home follow within a second."""
    import yaml
    from pydantic import ValidationError

    from newsfeed.feed.arms import Arm, Experiment

    shares = _pairs(arm, "--arm")
    models = _pairs(model, "--model")
    try:
        numbers = {name: float(value) for name, value in shares.items()}
    except ValueError:
        raise fail(f"--arm: shares must be numbers, got {shares}") from None
    store = _store(home, state)
    try:
        based_on = store.read()
        experiment = (Experiment.model_validate(yaml.safe_load(file.read_text()) or {}) if file
                      else based_on)
        arms = {a.name: a for a in experiment.arms}
        for name in {*numbers, *models}:
            if name not in arms:
                default = "champion" if name == "champion" else "challenger"
                arms[name] = Arm(name=name, share=0, two_tower=default, ranker=default)
        for name, ref in models.items():
            arms[name] = arms[name].model_copy(update={"two_tower": ref, "ranker": ref})
        if numbers:  # the arms named are the experiment's arms; others drop out
            arms = {n: a.model_copy(update={"share": numbers.get(n, 0.0)}) for n, a in arms.items()
                    if n in numbers or n == (shadow or experiment.shadow)}
        update = {"arms": [a.model_dump() for a in arms.values()]}
        if shadow is not None:
            update["shadow"] = shadow or None
        if salt:
            update["salt"] = salt
        experiment = Experiment.model_validate({**experiment.model_dump(), **update})
    except ValidationError as err:
        raise fail(f"invalid experiment: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    except (OSError, yaml.YAMLError) as err:
        raise fail(f"{file}: {err}") from None
    _print(store.save(experiment, based_on.version))  # refused if another writer changed it meanwhile


@app.command()
def show(home: HomeOption = None, state: StateOption = None) -> None:
    """The experiment's arms, shares and models."""
    _print(_store(home, state).read())


def _print(experiment) -> None:
    from rich.table import Table

    table = Table(title=f"experiment {experiment.name!r} version {experiment.version} (salt {experiment.salt!r})")
    for column in ("arm", "share %", "two-tower", "ranker", "weights", "re-ranking"):
        table.add_column(column, justify="right" if column == "share %" else "left")
    for a in experiment.arms:
        changed = {k: v for k, v in a.reranking.model_dump().items()
                   if v != type(a.reranking)().model_dump()[k]}
        table.add_row(a.name + (" (shadow)" if a.name == experiment.shadow else ""), f"{a.share:g}", a.two_tower,
                      a.ranker, ", ".join(f"{k}={v:g}" for k, v in a.weights.items()) or "registered",
                      ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults")
    console.print(table)


@app.command()
def report(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Read this data folder's impressions "
                                                                     "[default: what this home's servers logged].")] = None,
    control: Annotated[str | None, typer.Option(help="Control arm [default: the experiment's champion arm].")] = None,
    expected: Annotated[list[str], typer.Option("--expected", help="NAME=PERCENT: the configured share of an arm, "
                                                                   "for the SRM test; repeat per arm [default: the "
                                                                   "experiment's shares].")] = [],
    rollback: Annotated[bool, typer.Option(help="Roll back challengers that breach a guardrail (in the "
                                                "experiment serving reads).")] = True,
    html: Annotated[Path | None, typer.Option(help="Also write the report as an HTML page here.")] = None,
    since_version: SinceVersionOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    home: HomeOption = None,
    state: StateOption = None,
) -> None:
    """Per-arm results with 95% intervals at the user level, the SRM test and guardrails."""
    import json

    from monitoring import experiment as analysis
    from monitoring import pages
    from newsfeed import atomic
    from newsfeed.feed.experiments import control_arm, rolled_back

    pairs = _pairs(expected, "--expected")
    try:
        shares = {name: float(value) for name, value in pairs.items()}
    except ValueError:
        raise fail(f"--expected: shares must be numbers, got {pairs}") from None
    if any(not 0 <= s <= 100 for s in shares.values()):
        raise fail(f"--expected: shares must be percentages (0-100), got {shares}")
    store = _store(home, state)
    experiment = store.read()
    impressions, posts = _impressions(home, data_dir, since_version)
    arms = sorted(impressions["variant"].unique())
    configured = {a.name for a in experiment.arms}
    configured_control = control_arm(experiment)
    control = control or (configured_control if configured_control in arms else arms[0])
    if not shares:
        shares = ({a.name: a.share for a in experiment.arms} if set(arms) <= configured
                  else {a: 100 / len(arms) for a in arms})
    try:
        result = analysis.analyse(impressions, control, shares, posts)
    except ValueError as err:
        raise fail(str(err)) from None
    breached = [name for name, arm in result["arms"].items() if arm.get("guardrails")
                and experiment.arm(name) is not None and experiment.arm(name).share > 0]
    if rollback and breached:
        saved = store.save(rolled_back(experiment, breached), experiment.version)
        result["rolled_back"] = breached
        result["experiment_version"] = saved.version
    if html:
        atomic.write_text(html, pages.experiment_page(result))
    if as_json:
        print(json.dumps(result, default=float))
        return
    _print_report(result)
    if html:
        console.print(f"page: {html}")


def _impressions(home, data_dir: Path | None, since_version: int | None):
    """(impressions, posts): a data folder's, or what this home's servers logged, labelled."""
    from monitoring import impression_log
    from newsfeed.config import Paths

    paths = Paths.resolve(home)
    try:
        if data_dir is not None:
            impressions, posts = impression_log.from_data_dir(data_dir)
        else:
            impressions = impression_log.from_served_log(paths.home, paths.data_dir)
            posts = impression_log.from_data_dir(paths.data_dir)[1] if paths.data_dir.is_dir() else None
    except NewsfeedError as err:
        raise fail(str(err)) from None
    if since_version is not None:
        if "experiment_version" not in impressions.columns:
            raise fail("--since-version: these impressions do not say which experiment version served them")
        impressions = impressions[impressions["experiment_version"] >= since_version]
        if impressions.empty:
            raise fail(f"--since-version {since_version}: no impressions served under it or later")
    return impressions, posts


@app.command()
def decide(
    since_version: SinceVersionOption = None,
    policy: Annotated[Path | None, typer.Option(help="Canary policy YAML (min_users, max_hours, measure) "
                                                     "[default: built-in].")] = None,
    apply: Annotated[bool, typer.Option(help="Carry the verdict out: promote (registry aliases, all traffic to the "
                                             "control) or roll back.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON.")] = False,
    registry: Annotated[str | None, typer.Option(help="embedded | production [env NEWSFEED_REGISTRY].")] = None,
    home: HomeOption = None,
    state: StateOption = None,
) -> None:
    """End a canary by its policy: per challenger arm, promote it (confidently better), roll it
    back (a guardrail, confidently worse, or not better in time) or let it run on."""
    import json

    import yaml
    from pydantic import ValidationError

    from monitoring import canary
    from monitoring import experiment as analysis
    from newsfeed.cli.common import open_registry
    from newsfeed.feed.experiments import challengers, control_arm, promote as promote_arm, rolled_back

    try:
        rules = canary.CanaryPolicy.model_validate(yaml.safe_load(policy.read_text()) or {}) if policy else \
            canary.CanaryPolicy()
    except (OSError, yaml.YAMLError, ValidationError) as err:
        raise fail(f"--policy {policy}: {first_line(err)}") from None
    store = _store(home, state)
    experiment = store.read()
    names = challengers(experiment)
    if not names:
        raise fail(f"no challenger arm with traffic: arms are {[(a.name, a.share) for a in experiment.arms]}")
    impressions, posts = _impressions(home, None, since_version)
    control = control_arm(experiment)
    hours = float((impressions["ts"].max() - impressions["ts"].min()).total_seconds() / 3600)
    try:
        result = analysis.analyse(impressions, control, {a.name: a.share for a in experiment.arms}, posts)
    except ValueError as err:
        raise fail(str(err)) from None
    verdicts = canary.decide(result, names, rules, hours)
    done = []
    if apply:
        promoted = [v for v in verdicts if v.action == canary.PROMOTE]
        if promoted:  # the best of them, if several
            best = max(promoted, key=lambda v: result["arms"][v.arm][f"diff_{rules.measure}"]["estimate"])
            versions, saved = promote_arm(store, open_registry(home, registry), best.arm)
            done.append({"promoted": best.arm, "versions": versions, "experiment_version": saved.version})
        else:
            back = [v.arm for v in verdicts if v.action == canary.ROLLBACK]
            if back:
                saved = store.save(rolled_back(experiment, back), experiment.version)
                done.append({"rolled_back": back, "experiment_version": saved.version})
    if as_json:
        print(json.dumps({"hours": hours, "verdicts": [v.to_dict() for v in verdicts], "done": done,
                          "report": result}, default=float))
        return
    for v in verdicts:
        console.print(f"{v.arm}: {v.action} ({v.why})", highlight=False, soft_wrap=True)
    for d in done:
        console.print(json.dumps(d), highlight=False)


def _print_report(result: dict) -> None:
    from rich.table import Table

    control = result["control"]
    arms = Table(title=f"experiment report: per arm (control {control})")
    for column in ("arm", "users", "impr.", "CTR", "hide", "eng/impr", "topics", "cover"):
        arms.add_column(column, justify="left" if column == "arm" else "right")
    lifts = Table(title=f"against {control}: relative lift of rates, difference of engagement; 95% interval "
                        "(users as units)")
    for column in ("arm", "measure", "lift", "95% interval"):
        lifts.add_column(column, justify="left" if column in ("arm", "measure") else "right")
    for name, arm in result["arms"].items():
        arms.add_row(name, f"{arm['users']:,}", f"{arm['impressions']:,}", f"{arm['ctr']:.4f}", f"{arm['hide_rate']:.4f}",
                     f"{arm['engagement_per_impression']:.3f}", f"{arm.get('topics_per_feed', float('nan')):.2f}",
                     f"{arm.get('coverage', float('nan')):.1%}")
        for measure in ("ctr", "hide_rate", "block_rate"):
            lift = arm.get(f"lift_{measure}")
            if lift:
                lifts.add_row(name, measure, f"{lift['estimate']:+.1%}", f"[{lift['ci'][0]:+.1%}, {lift['ci'][1]:+.1%}]")
        for measure in ("engagement_per_impression", "engagement_per_user"):
            diff = arm.get(f"diff_{measure}")
            if diff:
                lifts.add_row(name, measure, f"{diff['estimate']:+.3f}", f"[{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]")
    console.print(arms)
    console.print(lifts)
    srm = result["srm"]
    verdict = "[bold red]SAMPLE RATIO MISMATCH[/]: the split is broken" if srm["mismatch"] else "split as configured"
    console.print(f"SRM: p = {srm['p_value']:.3g} ({verdict}; observed users {srm['observed']}, "
                  f"expected shares {srm['expected']})", soft_wrap=True)
    for name, arm in result["arms"].items():
        for breach in arm.get("guardrails", []):
            console.print(f"[bold red]guardrail[/] {name}: {breach}", soft_wrap=True)
    for name in result.get("rolled_back", []):
        console.print(f"[bold red]rolled back[/] {name}: share 0, control {control} takes its traffic "
                      f"(experiment version {result['experiment_version']})")


@app.command()
def rollback(
    arm: Annotated[list[str] | None, typer.Argument(help="Arms to roll back [default: every arm but the control].")] = None,
    home: HomeOption = None,
    state: StateOption = None,
) -> None:
    """Send a challenger's traffic back to the control arm; servers follow within a second."""
    from newsfeed.feed.experiments import control_arm, rolled_back

    store = _store(home, state)
    experiment = store.read()
    control = control_arm(experiment)
    names = arm or [a.name for a in experiment.arms if a.name != control and a.share > 0]
    if not names:
        raise fail(f"nothing to roll back: {control!r} already serves all traffic")
    _print(store.save(rolled_back(experiment, names), experiment.version))


@app.command()
def promote(
    arm: Annotated[str, typer.Argument(help="The arm whose models become champion.")],
    registry: Annotated[str | None, typer.Option(help="embedded | production [env NEWSFEED_REGISTRY].")] = None,
    home: HomeOption = None,
    state: StateOption = None,
) -> None:
    """Make an arm's models the champions and give the control arm (now serving them) all traffic."""
    from newsfeed.cli.common import open_registry
    from newsfeed.feed.experiments import control_arm, promote as promote_arm

    store = _store(home, state)
    if store.read().arm(arm) is None:
        raise fail(f"no arm {arm!r}: arms are {[a.name for a in store.read().arms]}")
    versions, saved = promote_arm(store, open_registry(home, registry), arm)
    console.print(f"champion now: {', '.join(f'{n} v{v}' for n, v in versions.items())}; "
                  f"arm {control_arm(saved)!r} serves them to all users")
    _print(saved)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Data folder to write the experiment's impressions to.")],
    quality: Annotated[list[str], typer.Option("--quality", help="NAME=Q: how well an arm ranks (1: by the "
                                                                 "truth, 0: at random, <0: badly); repeat per arm.")],
    days: Annotated[float, typer.Option(help="Days of the data's last sessions to replay.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    home: HomeOption = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Simulated dataset whose users and world "
                                                                     "serve [default <home>/data].")] = None,
) -> None:
    """Replay simulated users through the experiment's arms (its sticky split) with arms of known
    quality: traffic to try `experiment report` on."""
    from newsfeed.config import Paths
    from newsfeed.data import ab_simulation
    from newsfeed.data.io import read_dataset, write_dataset
    from newsfeed.data.world import World

    levels = _pairs(quality, "--quality")
    try:
        levels = {name: float(value) for name, value in levels.items()}
    except ValueError:
        raise fail(f"--quality: expected numbers, got {levels}") from None
    if days <= 0:
        raise fail(f"--days: must be positive, got {days:g}")
    experiment = _store(home).read()
    missing = sorted({a.name for a in experiment.arms if a.share > 0} - set(levels))
    if missing:
        raise fail(f"--quality: give every arm with traffic a quality; missing {missing}")
    source = Paths.resolve(home, data_dir).data_dir
    world = World.of_dataset(source)
    if world is None:
        raise fail(f"{source}: not a simulated dataset (no world to draw reactions from)")
    tables = read_dataset(source, ("impressions", "posts", "users"))
    impressions = ab_simulation.simulate(tables["impressions"], world, lambda u: experiment.assign(u).name,
                                         levels, days, seed)
    write_dataset(out, {"impressions": impressions, "posts": tables["posts"], "users": tables["users"]},
                  source="ab-simulation", arms=levels, experiment_version=experiment.version)
    console.print(f"{len(impressions):,} impressions of {impressions['user_id'].nunique():,} users in "
                  f"{impressions['variant'].nunique()} arms written to {out}")
