"""The plan report filters (plugins/filter/llm_plan_report.py) on real plans of fixture GPUs."""

from html.parser import HTMLParser

import pytest

import llm_plan_report
from conftest import planned_hostvars

SCRIPT_HOST = "<script>alert(1)</script>"
FLEET = [
    ("big", "h200", {}),
    ("aws", "2x-a10g", {}),
    ("mixed", "mixed-4090-3060", {}),
    ("desk", "rtx3060-desktop", {}),
    ("demo", "no-devices", {"mode": "cpu"}),
    ("refused", "rtx3060", {"quantization": "bf16"}),
    (SCRIPT_HOST, "rtx4090", {}),
]
HOSTS = [host for host, _card, _choices in FLEET]
REFUSED = ("LLM plan failed (1x GPU: NVIDIA GeForce RTX 3060 12288 MiB, driver 550.163.01): "
           "bf16 weights need 14.19 GiB but the NVIDIA GeForce RTX 3060 has 11.40 GiB (CUDA "
           "total) x 0.846 = 9.64 GiB (254 MiB already in use by other processes): set "
           "llm_quantization: awq or gguf_q4_k_m")


@pytest.fixture(scope="module")
def hostvars():
    return planned_hostvars(FLEET)


class _Page(HTMLParser):
    """Collects the page's GPU bars, host headings, errors, tags and URLs."""

    def __init__(self):
        super().__init__()
        self.bars = []  # [{"label": str, "unused": bool, "parts": [(class, width, title)]}]
        self.headings, self.errors, self.tags, self.urls = [], [], [], []
        self._stack, self._text = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class", "")
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("href", "src") or "url(" in (v or "")]
        parent = self._stack[-1] if self._stack else ("", "")
        if tag == "div" and cls.split()[:1] == ["gpu"]:
            self.bars.append({"label": "", "unused": "unused" in cls.split(), "parts": []})
        elif tag == "div" and parent == ("div", "bar"):
            width = a["style"].replace("width:", "").replace("%", "").strip()
            self.bars[-1]["parts"].append((cls, float(width), a["title"]))
        if (tag, cls) in (("div", "label"), ("h2", ""), ("p", "error")):
            self._text = [tag, cls, ""]
        self._stack.append((tag, cls))

    def handle_endtag(self, tag):
        self._stack.pop()
        if self._text and self._text[0] == tag:
            kind, text = self._text[1], self._text[2]
            if kind == "label":
                self.bars[-1]["label"] = text
            elif kind == "error":
                self.errors.append(text)
            else:
                self.headings.append(text)
            self._text = None

    def handle_data(self, data):
        if self._text:
            self._text[2] += data


def _page(hostvars):
    page = _Page()
    page.feed(llm_plan_report.report_html(hostvars, HOSTS))
    page.close()
    return page


def test_html_draws_one_bar_per_gpu_whose_widths_add_up_to_100(hostvars):
    bars = _page(hostvars).bars
    assert [b["label"] for b in bars] == [
        "GPU 0 NVIDIA H200 - 140.4 GiB - vLLM bf16, replica 1 of 1",
        "GPU 0 NVIDIA A10G - 22.5 GiB - vLLM bf16, replica 1 of 2",
        "GPU 1 NVIDIA A10G - 22.5 GiB - vLLM bf16, replica 2 of 2",
        "GPU 0 NVIDIA GeForce RTX 4090 - 24.0 GiB - vLLM bf16, replica 1 of 1",
        "GPU 1 NVIDIA GeForce RTX 3060 - 12.0 GiB - unused (alone it would serve: llamacpp "
        "gguf_q4_k_m, context 32768)",
        "GPU 0 NVIDIA GeForce RTX 3060 - 12.0 GiB - llama.cpp GGUF Q4_K_M, 10 slots",
        "GPU 0 NVIDIA GeForce RTX 4090 - 24.0 GiB - vLLM bf16, replica 1 of 1",
    ]
    for bar in bars:
        assert round(sum(width for _c, width, _t in bar["parts"]), 6) == 100.0, bar
    assert bars[0]["parts"] == [
        ("weights", 10.1, "weights: 14.19 GiB"), ("kv_cache", 86.41, "KV cache: 121.33 GiB"),
        ("activations", 1.61, "activations: 2.25 GiB"),
        ("reserve", 1.5, "reserve (CUDA context, graphs, headroom): 2.10 GiB"),
        ("free", 0.38, "free: 0.54 GiB")]  # nothing in use by others: no segment
    assert bars[5]["parts"] == [  # the desktop 3060: the display holds 1258 MiB
        ("weights", 34.0, "weights: 4.08 GiB"), ("kv_cache", 39.42, "KV cache: 4.73 GiB"),
        ("activations", 1.81, "activations: 0.22 GiB"),
        ("reserve", 10.22, "reserve (CUDA context, graphs, headroom): 1.23 GiB"),
        ("others", 10.24, "in use by others: 1.23 GiB"), ("free", 4.31, "free: 0.52 GiB")]


def test_html_shows_the_unused_3060_of_the_mixed_host_as_free_memory(hostvars):
    bars = _page(hostvars).bars
    assert [b["unused"] for b in bars] == [False, False, False, False, True, False, False]
    assert bars[4]["parts"] == [("others", 2.07, "in use by others: 0.25 GiB"),
                                ("free", 97.93, "free: 11.75 GiB")]


def test_html_legend_names_every_memory_part_with_its_colour(hostvars):
    page = llm_plan_report.report_html(hostvars, HOSTS)
    assert ('<ul class="legend"><li><span class="swatch weights"></span>weights</li>'
            '<li><span class="swatch kv_cache"></span>KV cache</li>'
            '<li><span class="swatch activations"></span>activations</li>'
            '<li><span class="swatch reserve"></span>reserve (CUDA context, graphs, headroom)'
            '</li><li><span class="swatch others"></span>in use by others</li>'
            '<li><span class="swatch free"></span>free</li>') in page
    for key, colour in (("weights", "#3b6fb6"), ("kv_cache", "#2f9e6e"),
                        ("activations", "#e8912d"), ("reserve", "#8e6bb8"),
                        ("others", "#d1495b"), ("free", "#dfe3e8")):
        assert ".%s { background: %s; }" % (key, colour) in page


def test_html_is_self_contained_and_escapes_host_strings(hostvars):
    page = llm_plan_report.report_html(hostvars, HOSTS)
    parsed = _page(hostvars)
    assert "script" not in parsed.tags and parsed.urls == []
    assert "http" not in page and "@import" not in page and "<link" not in page
    assert "<h2>&lt;script&gt;alert(1)&lt;/script&gt; <span" in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page
    assert SCRIPT_HOST + " vllm cu130" in [h.split(" \u00b7 ")[0] for h in parsed.headings]


def test_html_headings_summarise_each_plan_and_failures_are_red_with_the_message(hostvars):
    parsed = _page(hostvars)
    assert parsed.headings[:2] == [
        "big vllm cu130 \u00b7 bf16 \u00b7 context 32768 \u00b7 1 replica \u00b7 utilization "
        "0.989 \u00b7 KV 2271763 tokens \u00b7 driver 580.159.04",
        "aws vllm cu129 \u00b7 bf16 \u00b7 context 32768 \u00b7 2 replicas \u00b7 utilization "
        "0.931 \u00b7 KV 95321 tokens \u00b7 driver 535.230.02"]
    assert parsed.headings[4] == ("demo vllm cpu \u00b7 bf16 \u00b7 context 4096 \u00b7 "
                                  "1 replica \u00b7 KV 18724 tokens")
    assert parsed.headings[5] == "refused plan failed"
    assert parsed.errors == [REFUSED]
    page = llm_plan_report.report_html(hostvars, HOSTS)
    assert '<section class="host failed">' in page and "p.error { color: #b42318;" in page
    assert ('<p class="cpu">No GPU: llm_mode cpu runs vllm on the CPU (demos and tests).</p>'
            in page)
    assert "7 host(s): 6 planned, 1 failed." in page
    assert "provisional" not in page.replace(".badge", "")  # every plan read nvidia-smi


def test_html_marks_a_provisional_plan(hostvars):
    hv = dict(hostvars, big=dict(hostvars["big"],
                                 llm_plan=dict(hostvars["big"]["llm_plan"], provisional=True)))
    page = llm_plan_report.report_html(hv, ["big"])
    assert 'driver 580.159.04</span> <span class="badge">provisional</span></h2>' in page


def test_markdown_has_the_table_memory_per_gpu_reasons_and_failures(hostvars):
    md = llm_plan_report.report_markdown(hostvars, HOSTS)
    lines = md.splitlines()
    assert lines[0] == "# LLM deployment plan"
    assert "7 host(s): 6 planned, 1 failed." in lines
    assert "| host | GPU | VRAM | driver | quantization | engine | context | util | " \
           "concurrency |" in lines
    assert ("| mixed | NVIDIA GeForce RTX 4090 (+1 unused) | 24.0 GiB | 580.95.05 | bf16 | "
            "vllm cu130 | 32768 | 0.935 | 256 seqs, KV 123222 tok |") in lines
    assert "| refused | FAILED: %s |  |  |  |  |  |  |  |" % REFUSED in lines
    mixed = md[md.index("\n## mixed\n"):md.index("\n## desk\n")]
    assert ("| 1 | NVIDIA GeForce RTX 3060 | 12.0 GiB | unused (alone it would serve: llamacpp "
            "gguf_q4_k_m, context 32768) | 0.00 | 0.00 | 0.00 | 0.00 | 0.25 | 11.75 |") in mixed
    assert ("| 0 | NVIDIA GeForce RTX 4090 | 24.0 GiB | vLLM bf16, replica 1 of 1 | 14.19 | "
            "6.58 | 0.60 | 2.10 | 0.00 | 0.52 |") in mixed
    assert "- bf16 fits with a useful context (KV room for 123222 tokens >= 8192)" in mixed
    aws = md[md.index("\n## aws\n"):md.index("\n## mixed\n")]
    assert "- driver 535 < 580 cannot run CUDA 13 wheels" in aws  # readable, not &lt;
    assert "\n## refused\n\n**Plan failed:** %s\n" % REFUSED in md
    assert "No GPU: llm_mode cpu runs vllm on the CPU (demos and tests)." in md
    assert "## &lt;script>alert(1)&lt;/script>" in lines and "<script" not in md


def test_reports_are_the_same_for_the_same_plans(hostvars):
    # No timestamp: a re-run of plan.yml with unchanged plans reports no change.
    assert llm_plan_report.report_html(hostvars, HOSTS) == \
        llm_plan_report.report_html(planned_hostvars(FLEET), HOSTS)
    assert llm_plan_report.report_markdown(hostvars, HOSTS) == \
        llm_plan_report.report_markdown(planned_hostvars(FLEET), HOSTS)


@pytest.mark.parametrize("parts", [
    {"weights": 1, "kv_cache": 1, "activations": 1, "reserve": 0, "others": 0, "free": 0},
    {"weights": 7, "kv_cache": 0, "activations": 0, "reserve": 0, "others": 0, "free": 0},
    {"weights": 10 ** 9, "kv_cache": 3, "activations": 5, "reserve": 7, "others": 11,
     "free": 13},
])
def test_bar_percentages_always_add_up_to_100(parts):
    widths = [p for _k, _b, p in llm_plan_report.bar_percentages({"memory_bytes": parts})]
    assert round(sum(widths), 6) == 100.0
    assert all(w >= 0 for w in widths)


def test_filters_are_registered_under_their_documented_names():
    assert set(llm_plan_report.FilterModule().filters()) == {
        "llm_plan_report_markdown", "llm_plan_report_html"}
