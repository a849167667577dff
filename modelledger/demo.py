"""``mledger demo``: a guided tour on a fresh registry.

Trains small real scikit-learn models, saves them with joblib, and walks through what a pipeline and a
person do with the registry: register, derive versions with new params and optimizer, record metrics,
tag, promote to production, delete, and finally read the catalog and a model's history back.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from eventstore.errors import ValidationError
from projections.diff import format_diff

from . import output
from .registry import Registry


def _need_sklearn() -> Any:
    try:
        import joblib
        from sklearn import datasets, linear_model, model_selection, neural_network
    except ImportError:
        raise ValidationError(
            "the demo trains scikit-learn models: install them with  pip install 'modelledger[demo]'"
        ) from None
    return joblib, datasets, linear_model, model_selection, neural_network


class _Tour:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.step = 0
        self.record: list[dict[str, Any]] = []

    def say(self, title: str, text: str = "") -> None:
        self.step += 1
        if not self.as_json:
            print(f"\n== {self.step}. {title}")
            if text:
                print(text)

    def show(self, text: str) -> None:
        if not self.as_json:
            print(text)


def run_demo(home: str | None = None, as_json: bool = False) -> int:
    joblib, datasets, linear_model, model_selection, neural_network = _need_sklearn()
    home = home or os.environ.get("MLEDGER_HOME_DEMO") or tempfile.mkdtemp(prefix="mledger-demo-")
    work = Path(tempfile.mkdtemp(prefix="mledger-demo-models-"))
    tour = _Tour(as_json)
    if not as_json:
        print(f"modelledger demo — a fresh registry in {home}")
        print("Every step below appends immutable events to the log; the catalog is built from them.")

    warnings.filterwarnings("ignore", module="sklearn")  # convergence chatter would drown the tour
    X, y = datasets.load_digits(return_X_y=True)
    X = X / 16.0  # pixel intensities 0..16 → 0..1
    X_train, X_test, y_train, y_test = model_selection.train_test_split(X, y, test_size=0.25, random_state=0)

    def train(model: Any, filename: str) -> tuple[Path, float]:
        model.fit(X_train, y_train)
        path = work / filename
        joblib.dump(model, path)
        return path, round(float(model.score(X_test, y_test)), 4)

    with Registry.open(home, actor="demo@modelledger", client="demo") as reg:
        tour.say("Train and register two models",
                 "A logistic regression and a small MLP on scikit-learn's digits, saved with joblib.")
        path, acc = train(linear_model.LogisticRegression(C=1.0, max_iter=2000), "logreg.joblib")
        logreg = reg.register(
            "digits-logreg", str(path), description="Logistic regression on 8x8 digits",
            params={"C": 1.0, "max_iter": 2000}, tags={"task": "classification", "dataset": "digits"},
        )
        reg.metrics(logreg, accuracy=acc)
        tour.show(f"  registered {output.version_line(logreg)}  accuracy={acc}")

        mlp_params = {"hidden_layer_sizes": [32], "alpha": 1e-4, "max_iter": 300}
        path, acc = train(neural_network.MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-4, max_iter=300,
                                                       solver="adam", learning_rate_init=1e-3, random_state=0),
                          "mlp.joblib")
        mlp = reg.register(
            "vision/digits-mlp", str(path), description="One-hidden-layer MLP on 8x8 digits",
            params=mlp_params, structure={"layers": [64, 32, 10], "activation": "relu"},
            optimizer={"name": "adam", "learning_rate_init": 1e-3}, tags={"task": "classification", "dataset": "digits"},
        )
        reg.metrics(mlp, accuracy=acc)
        tour.show(f"  registered {output.version_line(mlp)}  accuracy={acc}")

        tour.say("Derive new versions", "Changing params or the optimizer makes a new version whose parent is "
                 "the old one; params merge as a JSON merge patch.")
        path, acc = train(linear_model.LogisticRegression(C=0.1, max_iter=2000), "logreg-c01.joblib")
        logreg2 = reg.update(logreg, params={"C": 0.1}, artifact=str(path))
        reg.metrics(logreg2, accuracy=acc)
        tour.show(f"  {logreg2.ref} from {logreg.ref}: params {json.dumps(logreg2.params)}  accuracy={acc}")

        path, acc = train(neural_network.MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-4, max_iter=300,
                                                       solver="sgd", learning_rate_init=0.01, momentum=0.9,
                                                       random_state=0), "mlp-sgd.joblib")
        mlp2 = reg.update(mlp, optimizer={"name": "sgd", "learning_rate_init": 0.01, "momentum": 0.9},
                          artifact=str(path))
        reg.metrics(mlp2, accuracy=acc)
        tour.show(f"  {mlp2.ref} from {mlp.ref}: optimizer {json.dumps(mlp2.optimizer)}  accuracy={acc}")

        same = reg.update(mlp2, params={"alpha": 1e-3})
        tour.show(f"  {same.ref} from {mlp2.ref}: params only, the artifact is the parent's "
                  f"({output.short_digest(same.artifact.get('digest'))}, nothing copied)")

        tour.say("Tag and promote", "Aliases like production point at one version; moving one is an event too.")
        best = reg.catalog().best("digits-logreg", "accuracy")
        reg.tag(best, validated="true")
        reg.alias(best, "production")
        tour.show(f"  best digits-logreg by accuracy: {best.ref} -> tagged validated=true, alias production")
        reg.alias(mlp, "production")
        reg.alias(mlp2, "production")
        promoted_at = reg.head()
        tour.show(f"  vision/digits-mlp@production: {mlp.ref} then {mlp2.ref}")
        back = reg.rollback("vision/digits-mlp", "production")
        tour.show(f"  rollback: vision/digits-mlp@production is back on version {back[0].data['version']}")

        tour.say("Delete", "Deletes are logical: the version disappears from the catalog, its events stay.")
        reg.delete(same, reason="superseded")
        tour.show(f"  deleted {same.ref} (reason: superseded)")

        tour.say("Search the catalog")
        found = reg.catalog().list(search="digits", tags={"task": "classification"})
        tour.show(output.models_table(found))
        tour.show("\nmodels with a version called logreg-c01.joblib: "
                  + ", ".join(m.name for m in reg.catalog().list(file="logreg-c01.joblib")))

        tour.say("One model in full", "mledger show vision/digits-mlp")
        model = reg.model("vision/digits-mlp")
        tour.show(output.model_detail(model))

        tour.say("Its history, from the log", "mledger history vision/digits-mlp")
        history = reg.history("vision/digits-mlp")
        tour.show(output.history_table(reg.changes(history)))

        tour.say("Travel in time", f"mledger show vision/digits-mlp@production --as-of '#{promoted_at}'")
        then = reg.catalog(as_of=promoted_at).get("vision/digits-mlp@production")
        now = reg.get("vision/digits-mlp@production")
        tour.show(f"  production right after the promotion (#{promoted_at}): {then.ref}; now: {now.ref}")
        d = reg.diff(now, then)
        tour.show("  what differs (mledger diff):\n" + "\n".join("    " + line for line in format_diff(d).splitlines()))
        report = reg.restore("vision/digits-mlp", as_of=promoted_at)
        tour.show(f"  mledger restore vision/digits-mlp --as-of '#{promoted_at}': {len(report['events'])} "
                  f"compensating event(s); production is {reg.get('vision/digits-mlp@production').ref} again")

        tour.say("Audit", "mledger audit: the hash chain, the append-only triggers, replay == catalog, blobs present")
        audit = reg.audit(deep=True)
        tour.show("\n".join(f"  {'ok ' if c.ok else 'FAIL'}  {c.name:<12} {c.detail}" for c in audit.checks))

        catalog = reg.catalog().list()
        result = {
            "home": str(home),
            "events": reg.head(),
            "models": [m.to_json() for m in catalog],
            "history": [e.to_json() for e in history],
            "audit": audit.to_json(),
        }
        if as_json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            print(f"\nThe log holds {reg.head()} events. Try:  MLEDGER_HOME={home} mledger log")
    return 0 if audit.ok else 6
