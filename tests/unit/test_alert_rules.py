"""The bundle's Prometheus alerts (roles/monitoring/files/llm-alerts.rules.yml) with Debian 12's promtool (2.42,
the version the monitoring role installs; `make promtool` unpacks it into $LLM_BUNDLE_CACHE/tools/bin):
`promtool check rules` on the file, and `promtool test rules` on tests/promtool/llm-alerts.test.yml, which must
make every alert fire on a synthetic series and stay quiet on a healthy one."""

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "roles" / "monitoring" / "files" / "llm-alerts.rules.yml"
TESTS = REPO / "tests" / "promtool" / "llm-alerts.test.yml"


def alerts():
    return [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def write_summary_only_rules(folder):
    """The rules with only their summary annotations, as the promtool unit tests expect them."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    (folder / RULES.name).write_text(yaml.safe_dump(rules, sort_keys=False))


def test_promtool_checks_the_rules(promtool):
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: %d rules found" % len(alerts()) in proc.stdout


def test_every_alert_has_a_severity_summary_description_and_runbook():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_fires_in_one_case_and_stays_quiet_in_another():
    fired, quiet = set(), set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
            # Quiet series within a firing case count too: a firing check that lists fewer hosts than the case
            # feeds shows the others stay quiet.
            hosts = {s["series"].split('host="')[1].split('"')[0] for s in case["input_series"]
                     if 'host="' in s["series"]}
            if check["exp_alerts"] and len({a["exp_labels"].get("host") for a in check["exp_alerts"]}) < len(hosts):
                quiet.add(check["alertname"])
    assert sorted(set(alerts()) - fired) == [], "alerts no test makes fire"
    assert sorted(set(alerts()) - quiet) == [], "alerts no test shows quiet on a healthy series"


def test_promtool_unit_tests_pass(promtool, tmp_path):
    write_summary_only_rules(tmp_path)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    proc = subprocess.run([promtool, "test", "rules", TESTS.name], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_a_wrong_expectation_fails(promtool, tmp_path):
    """The harness can fail: the same tests with one alert expected on the wrong host do not pass."""
    write_summary_only_rules(tmp_path)
    (tmp_path / TESTS.name).write_text(TESTS.read_text().replace("host: gpu1, instance: \"10.0.0.1:9443\"}",
                                                                 "host: gpu2, instance: \"10.0.0.1:9443\"}", 1))
    proc = subprocess.run([promtool, "test", "rules", TESTS.name], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "LlmEngineDown" in proc.stdout + proc.stderr


def _filters():
    import sys
    sys.path.insert(0, str(REPO / "plugins" / "filter"))
    import llm_monitoring
    return llm_monitoring


def test_alert_for_overrides_change_only_the_named_rules_and_pass_promtool(promtool, tmp_path):
    m = _filters()
    text = RULES.read_text()
    assert m.llm_alert_rules(text, {}) == text  # nothing to replace: the file as shipped, comments and all
    out = m.llm_alert_rules(text, {"LlmEngineDown": "30s", "LlmHttp5xx": "1h30m"})
    shipped = {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r}
    changed = {r["alert"]: r for g in yaml.safe_load(out)["groups"] for r in g["rules"] if "alert" in r}
    assert changed["LlmEngineDown"]["for"] == "30s" and changed["LlmHttp5xx"]["for"] == "1h30m"
    assert shipped["LlmEngineDown"]["for"] == "2m"
    for name in shipped:
        if name not in ("LlmEngineDown", "LlmHttp5xx"):
            assert changed[name] == shipped[name], name
    (tmp_path / "rules.yml").write_text(out)
    proc = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_for_overrides_refuse_unknown_alerts_and_bad_durations():
    m = _filters()
    text = RULES.read_text()
    assert m.llm_alert_for_problems(text, {"LlmEngineDown": "1h30m", "LlmGpuHot": "90s"}) == []
    problems = m.llm_alert_for_problems(text, {"EngineDown": "5m", "LlmGpuHot": "5min", "LlmHttp5xx": "",
                                               "LlmDiskAlmostFull": "30m1h"})
    assert problems[0].startswith("monitoring_alert_for names 'EngineDown', which is no alert")
    assert "use one of LlmEngineDown, LlmNoHealthyEngine," in problems[0]
    assert problems[1:] == ["monitoring_alert_for.%s is %r, not a Prometheus duration: use e.g. 30s, 5m or 1h30m"
                            % (name, value) for name, value in (("LlmGpuHot", "5min"), ("LlmHttp5xx", ""),
                                                                ("LlmDiskAlmostFull", "30m1h"))]
    assert m.llm_alert_for_problems(text, ["LlmEngineDown"])[0].startswith("monitoring_alert_for must be a mapping")
    try:
        m.llm_alert_rules(text, {"LlmGpuHot": "5min"})
    except ValueError as exc:
        assert "LlmGpuHot" in str(exc)
    else:
        raise AssertionError("a bad duration was written into the rules")
