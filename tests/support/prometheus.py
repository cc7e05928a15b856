"""Test helpers for the Prometheus side of the project: the Grafana dashboard, the alert rules and a real Prometheus.

* :func:`dashboard_expressions` and :func:`rule_expressions` list every PromQL expression of
  ``deploy/grafana/lead-attribution.json`` and ``deploy/prometheus/alerts.yml``, ready to be sent to Prometheus
  (Grafana's ``$__rate_interval`` and friends and the dashboard's own variables are replaced by concrete values).
* :func:`metric_names` tells which metric families an expression reads.
* :func:`running_prometheus` starts the Debian ``/usr/bin/prometheus`` scraping one target every second and
  yields a :class:`PrometheusClient` for its HTTP API.

Standard library only, except PyYAML for the rules file.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_GRAFANA_VARIABLES",
    "PrometheusClient",
    "PrometheusError",
    "dashboard_expressions",
    "metric_names",
    "rule_expressions",
    "running_prometheus",
]

PROMETHEUS_BINARY = "/usr/bin/prometheus"

#: Grafana's built-in variables, replaced by concrete values that Prometheus accepts.
DEFAULT_GRAFANA_VARIABLES: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name} or ${name:format}, [[name]]
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")


# --------------------------------------------------------------------------------------------------------------
# Expressions of the dashboard and of the rules
# --------------------------------------------------------------------------------------------------------------


def _iter_panels(panels: Any) -> Iterator[dict[str, Any]]:
    """Every panel, including the panels nested in collapsed rows (and in any deeper ``panels`` list)."""
    if not isinstance(panels, list):
        return
    for panel in panels:
        if isinstance(panel, dict):
            yield panel
            yield from _iter_panels(panel.get("panels"))


def _dashboard_variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """A concrete value for each templating variable of the dashboard, from its saved ``current`` value."""
    values: dict[str, str] = {}
    templating = dashboard.get("templating")
    variables = templating.get("list", []) if isinstance(templating, dict) else []
    for variable in variables:
        if not isinstance(variable, dict) or not isinstance(variable.get("name"), str):
            continue
        name: str = variable["name"]
        current = variable.get("current")
        value: Any = current.get("value") if isinstance(current, dict) else None
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else value
        if value == "$__all" or value is None:
            all_value = variable.get("allValue")
            values[name] = all_value if isinstance(all_value, str) and all_value else ".*"
        elif isinstance(value, list):
            values[name] = "(" + "|".join(str(item) for item in value) + ")"
        else:
            values[name] = str(value)
    return values


def _substitute(expr: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name not in variables:
            raise ValueError(f"unknown Grafana variable {match.group(0)!r} in expression: {expr}")
        return variables[name]

    return _VARIABLE.sub(replace, expr)


def dashboard_expressions(path: Path, variables: Mapping[str, str] | None = None) -> list[str]:
    """Every PromQL expression of the dashboard's panels (nested rows included), in panel order.

    Grafana's built-in variables become fixed durations (``$__rate_interval`` -> ``1m``, ``$__range`` -> ``1h``,
    see :data:`DEFAULT_GRAFANA_VARIABLES`), the dashboard's own variables their saved current value (``.*`` for
    "All"); ``variables`` overrides both. An unknown variable raises :class:`ValueError`.
    """
    dashboard = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(dashboard, dict):
        raise ValueError(f"{path}: not a Grafana dashboard (top level is not an object)")
    values = {**DEFAULT_GRAFANA_VARIABLES, **_dashboard_variables(dashboard), **(variables or {})}
    expressions: list[str] = []
    for panel in _iter_panels(dashboard.get("panels")):
        targets = panel.get("targets")
        if not isinstance(targets, list):
            continue
        for target in targets:
            if isinstance(target, dict) and isinstance(target.get("expr"), str) and target["expr"].strip():
                expressions.append(_substitute(target["expr"], values))
    return expressions


def rule_expressions(path: Path) -> list[str]:
    """The ``expr`` of every alerting and recording rule of a Prometheus rules file, in file order."""
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError(f"{path}: not a Prometheus rules file (no top-level 'groups' list)")
    expressions: list[str] = []
    for group in document["groups"]:
        for rule in group.get("rules", []) if isinstance(group, dict) else []:
            if isinstance(rule, dict) and "expr" in rule:
                expressions.append(str(rule["expr"]).strip())
    return expressions


# --------------------------------------------------------------------------------------------------------------
# Metric names referenced by an expression
# --------------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<comment>\#[^\n]*)
    | (?P<number>\d[\w.]*)                 # numbers and durations: 0.05, 5m, 1d
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<open_brace>\{)
    | (?P<close_brace>\})
    | (?P<open_paren>\()
    | (?P<close_paren>\))
    | (?P<other>\S)
    """,
    re.VERBOSE,
)

# Keywords followed by a parenthesised list of label names.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _base_family(name: str) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def metric_names(expr: str) -> set[str]:
    """Metric families an expression reads: identifiers starting with ``leads_`` and the ``up`` metric.

    A small tokenizer, not a PromQL parser: it skips string literals, comments, label matchers inside braces and
    the label lists of ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``. Histogram series
    (``_bucket``, ``_sum``, ``_count``) are reported as their family name.
    """
    names: set[str] = set()
    brace_depth = 0
    label_list_depth = 0  # > 0 while inside the parentheses of a label list
    expect_label_list = False
    for match in _TOKEN.finditer(expr):
        kind = match.lastgroup
        text = match.group()
        if kind in ("string", "comment", "number"):
            expect_label_list = False
            continue
        if kind == "open_brace":
            brace_depth += 1
        elif kind == "close_brace":
            brace_depth = max(0, brace_depth - 1)
        elif kind == "open_paren":
            if expect_label_list or label_list_depth:
                label_list_depth += 1
        elif kind == "close_paren":
            label_list_depth = max(0, label_list_depth - 1)
        elif kind == "ident" and brace_depth == 0 and label_list_depth == 0:
            if text in _LABEL_LIST_KEYWORDS:
                expect_label_list = True
                continue
            if text.startswith("leads_"):
                names.add(_base_family(text))
            elif text == "up":
                names.add(text)
        expect_label_list = False
    return names


# --------------------------------------------------------------------------------------------------------------
# A real Prometheus
# --------------------------------------------------------------------------------------------------------------


class PrometheusError(RuntimeError):
    """Prometheus answered with an error, could not be reached, or did not start."""


class PrometheusClient:
    """A minimal client for the Prometheus HTTP API (``/api/v1``), urllib only."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        data = urllib.parse.urlencode(params).encode() if params is not None else None
        request = urllib.request.Request(url, data=data)  # noqa: S310 (POST when there are parameters)
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (local URL)
                body = response.read()
        except urllib.error.HTTPError as error:  # 400/422/503 carry a JSON error body
            body = error.read()
            if not body:
                raise PrometheusError(f"{url}: HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError) as error:
            raise PrometheusError(f"{url}: cannot reach Prometheus: {error}") from error
        try:
            payload = json.loads(body)
        except ValueError as error:
            raise PrometheusError(f"{url}: not a JSON answer: {body[:200]!r}") from error
        if not isinstance(payload, dict) or payload.get("status") != "success":
            detail = payload.get("error", payload) if isinstance(payload, dict) else payload
            error_type = payload.get("errorType", "error") if isinstance(payload, dict) else "error"
            what = f" for {params['query']!r}" if params and "query" in params else ""
            raise PrometheusError(f"Prometheus {path}{what} failed ({error_type}): {detail}")
        return payload.get("data")

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """Evaluates an instant query; returns the ``data`` object (``resultType`` and ``result``).

        Raises :class:`PrometheusError` when Prometheus answers ``status != "success"`` (for example a PromQL
        syntax error), naming the expression and Prometheus' message.
        """
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("/api/v1/query", params)
        if not isinstance(data, dict):
            raise PrometheusError(f"Prometheus /api/v1/query for {expr!r}: unexpected data {data!r}")
        return data

    def vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query as ``[(labels, value), ...]`` (scalars become one sample without labels)."""
        data = self.query(expr)
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        if data.get("resultType") != "vector":
            raise PrometheusError(f"{expr!r} is not an instant vector but a {data.get('resultType')}")
        return [(dict(sample["metric"]), float(sample["value"][1])) for sample in data["result"]]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets (``/api/v1/targets``)."""
        data = self._api("/api/v1/targets")
        active = data.get("activeTargets", []) if isinstance(data, dict) else []
        return [target for target in active if isinstance(target, dict)]

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups (``/api/v1/rules``), with each rule's health and last error."""
        data = self._api("/api/v1/rules")
        groups = data.get("groups", []) if isinstance(data, dict) else []
        return [group for group in groups if isinstance(group, dict)]

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (``/api/v1/alerts``)."""
        data = self._api("/api/v1/alerts")
        alerts = data.get("alerts", []) if isinstance(data, dict) else []
        return [alert for alert in alerts if isinstance(alert, dict)]

    def wait_for_scrape(self, job: str = "lead-attribution", timeout: float = 30.0) -> None:
        """Waits until every target of ``job`` has been scraped successfully (``up == 1``) at least once."""
        deadline = time.monotonic() + timeout
        selector = 'up{job="' + job.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        while True:
            samples = self.vector(selector)
            if samples and all(value == 1 for _, value in samples):
                return
            if time.monotonic() >= deadline:
                errors = [
                    f"{target.get('scrapeUrl')}: {target.get('health')} {target.get('lastError') or ''}".strip()
                    for target in self.targets()
                    if target.get("labels", {}).get("job") == job
                ]
                raise PrometheusError(
                    f"no successful scrape of job {job!r} within {timeout:.0f}s; "
                    f"targets: {'; '.join(errors) or 'none discovered yet'}"
                )
            time.sleep(0.25)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def _log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running_prometheus(
    scrape_target: str,
    rules_file: Path | None,
    workdir: Path,
    port: int,
    *,
    job: str = "lead-attribution",
    binary: str = PROMETHEUS_BINARY,
    startup_timeout: float = 30.0,
) -> Iterator[PrometheusClient]:
    """Runs Prometheus on 127.0.0.1:``port`` scraping ``scrape_target`` (``host:port``) every second as ``job``.

    Rules from ``rules_file`` (if any) are evaluated every second. The configuration, the TSDB and the log
    (``prometheus.log``) go to ``workdir``. Yields a :class:`PrometheusClient` once ``/-/ready`` answers; stops
    the process on exit.
    """
    executable = shutil.which(binary)
    if executable is None:
        raise PrometheusError(f"{binary} not found: install the Debian package 'prometheus'")
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [scrape_target]}]}],
    }
    if rules_file is not None:
        config["rule_files"] = [str(Path(rules_file).resolve())]
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")  # JSON is valid YAML
    log_path = workdir / "prometheus.log"
    command = [
        executable,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    client = PrometheusClient(f"http://127.0.0.1:{port}")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + startup_timeout
        while not client.ready():
            if process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with code {process.returncode} at start-up:\n{_log_tail(log_path)}"
                )
            if time.monotonic() >= deadline:
                raise PrometheusError(
                    f"prometheus not ready on port {port} after {startup_timeout:.0f}s:\n{_log_tail(log_path)}"
                )
            time.sleep(0.1)
        yield client
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
