"""The training pipeline: raw data to a registered, indexed, packaged challenger.

    prepare data -> validate -> features (apply, compute, materialize) -> point-in-time
    training sets -> train two-tower | train ranker -> evaluate the champion on the same
    held-out period -> gate -> [passed] register -> build index -> distil the pre-ranker
                                                           | package Bento

The same definition runs locally (``pipelines.local``, kfp's SubprocessRunner) and on
Kubeflow Pipelines (the IR YAML under ``pipelines/compiled/``). The parameters' defaults are
the cluster's: the home folder is the shared volume ``newsfeed-home`` mounted at
``/var/lib/newsfeed`` in every step, the stores' settings come from the optional ConfigMap
``newsfeed-config`` (keys = the NEWSFEED_* environment variables) and their credentials
from the optional Secret ``newsfeed-stores`` (what ``k8s/`` creates and names); the local
runner ignores all three and passes its own home.
"""

from kfp import dsl, kubernetes

from newsfeed.gate import GateConfig
from newsfeed.models.settings import RANKER_TRAINING, TWO_TOWER_TRAINING
from pipelines import components as c

NAME = "newsfeed-training"
CLUSTER_HOME = "/var/lib/newsfeed"
HOME_VOLUME = "newsfeed-home"
CONFIG_MAP = "newsfeed-config"  # the same names the manifests in k8s/ create
CONFIG_ENV = ("NEWSFEED_FEATURE_STORE", "NEWSFEED_REGISTRY", "NEWSFEED_FEAST_PROJECT", "NEWSFEED_RAY_ADDRESS",
              "NEWSFEED_MLFLOW_URI", "NEWSFEED_MLFLOW_ARTIFACTS")
SECRET = "newsfeed-stores"
SECRET_ENV = {"feast-registry-url": "NEWSFEED_FEAST_REGISTRY_URL", "redis": "NEWSFEED_REDIS"}
"""Credentials come from the Secret, never from the ConfigMap."""


def _on_cluster(task: dsl.PipelineTask, cpu: str = "1", memory: str = "4G") -> dsl.PipelineTask:
    """What a step needs on Kubernetes: the shared home, the stores' settings, resources;
    no step caching (each reads the shared stores, which change under the same inputs)."""
    kubernetes.mount_pvc(task, pvc_name=HOME_VOLUME, mount_path=CLUSTER_HOME)
    kubernetes.use_config_map_as_env(task, CONFIG_MAP, {k: k for k in CONFIG_ENV}, optional=True)
    kubernetes.use_secret_as_env(task, SECRET, SECRET_ENV, optional=True)
    task.set_env_variable("HF_HUB_OFFLINE", "1")  # the sentence model ships in the image
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    task.set_caching_options(False)
    return task


@dsl.pipeline(name=NAME, description="Train, evaluate, gate, register, index and package the newsfeed models.")
def training_pipeline(
    home: str = CLUSTER_HOME,
    data_dir: str = "",
    feature_store: str = "",
    registry: str = "",
    scale: float = 1.0,
    seed: int = 7,
    max_bad_rate: float = 0.01,
    epochs: int = RANKER_TRAINING.epochs,
    two_tower_learning_rate: float = TWO_TOWER_TRAINING.learning_rate,
    ranker_learning_rate: float = RANKER_TRAINING.learning_rate,
    ranker_architecture: str = "mmoe",
    ranker_from: str = "",
    trainer: str = "local",
    ray_workers: int = 2,
    ray_address: str = "",
    gate_tolerance: float = GateConfig().tolerance,
    guardrail_tolerance: float = GateConfig().guardrail_tolerance,
    calibration_tolerance: float = GateConfig().calibration_tolerance,
    holdout_days: float = 0.0,
    prerank_users: int = 300,
) -> str:
    """Parameters: ``data_dir`` (default <home>/data) is the data location; ``scale`` sizes
    the simulated dataset made there when it holds none; ``trainer`` is local (in the step)
    or ray (Ray Train, ``ray_workers`` workers, on ``ray_address`` or a Ray started for the
    step); the tolerances are the gate's (see newsfeed.gate); ``holdout_days`` (0: the last 2/7
    of the data's span) are the newest days held out, half validation, half test (see
    newsfeed.models.datasets.SplitConfig); ``prerank_users`` users' lists distil the pre-ranker
    registered with the new ranker (0: none; see newsfeed.feed.prerank_training);
    ``ranker_from`` (empty: train afresh) names a registered ranker, alias or version, to
    fine-tune on the impressions since the time it was trained through instead (continual
    training, newsfeed.models.continual; afresh while there is no such version yet), and the
    gate compares the result with the champion as it would a fresh one. Returns the gate's
    decision (JSON)."""
    store = dict(home=home, data_dir=data_dir, feature_store=feature_store)
    data = _on_cluster(c.prepare_data(home=home, data_dir=data_dir, scale=scale, seed=seed))
    validated = _on_cluster(c.validate_data(home=home, data_dir=data_dir, max_bad_rate=max_bad_rate,
                                            dataset=data.outputs["dataset"]))
    features = _on_cluster(c.build_features(**store, validation=validated.outputs["validation"]), memory="8G")
    sets = _on_cluster(c.build_training_sets(**store, holdout_days=holdout_days, features=features.outputs["features"]),
                       cpu="2", memory="16G")
    training = dict(**store, registry=registry, seed=seed, epochs=epochs, trainer=trainer, ray_workers=ray_workers,
                    ray_address=ray_address, holdout_days=holdout_days)
    two_tower = _on_cluster(c.train_two_tower(**training, learning_rate=two_tower_learning_rate,
                                              training_set=sets.outputs["two_tower_set"]), cpu="2", memory="8G")
    ranker = _on_cluster(c.train_ranker(**training, learning_rate=ranker_learning_rate,
                                        architecture=ranker_architecture, start=ranker_from,
                                        training_set=sets.outputs["ranker_set"]),
                         cpu="2", memory="16G")
    champion = _on_cluster(c.evaluate_champion(**store, registry=registry, holdout_days=holdout_days,
                                               two_tower=two_tower.outputs["model"], ranker=ranker.outputs["model"]),
                           memory="8G")
    decision = _on_cluster(c.gate(two_tower_metrics=two_tower.outputs["metrics"],
                                  ranker_metrics=ranker.outputs["metrics"], champion=champion.outputs["champion"],
                                  tolerance=gate_tolerance, guardrail_tolerance=guardrail_tolerance,
                                  calibration_tolerance=calibration_tolerance), memory="1G")
    # kfp.local resolves a condition only on a step's single return value ("Output").
    with dsl.If(decision.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - a KFP condition, not Python
        registered = _on_cluster(c.register_models(home=home, registry=registry, two_tower=two_tower.outputs["model"],
                                                   ranker=ranker.outputs["model"],
                                                   decision=decision.outputs["decision"],
                                                   pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER), memory="1G")
        index = _on_cluster(c.build_index(**store, registry=registry, versions=registered.output), memory="8G")
        _on_cluster(c.distill_prerank(**store, registry=registry, versions=registered.output, users=prerank_users,
                                      seed=seed).after(index), cpu="2", memory="8G")
        _on_cluster(c.package_ranker(home=home, registry=registry, versions=registered.output))
    return decision.outputs["decision"]
