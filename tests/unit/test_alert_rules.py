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
