"""Knowledge bases (RAG) that never call out: the embedding server (roles/embeddings, llama-server --embeddings with the
tiny random embedding model of tests/assets) on loopback, Open WebUI embedding through it, and a chat that uses a
knowledge base whose document text reaches the engine's prompt.

The engine's prompt is read from llama-server's /slots, which shows a slot's prompt text only while
LLAMA_SERVER_SLOTS_DEBUG is set: the check adds that for itself (a systemd drop-in) and removes it afterwards.
"""

import base64
import json
import re
import secrets
import time

import pytest
from test_front import (
    HOST,
    REPO,
    browser_setup,
    curl,
    curl_json,
    env_value,
    host_http,
    signin,
)

testinfra_hosts = [f"podman://{HOST}"]

EMBED_PORT = 8083
ENGINE_BACKEND = "http://127.0.0.1:8082"  # llama-server behind the LoRA router (demo inventory serves tiny-lora)
DROPIN_DIR = "/etc/systemd/system/llamacpp.service.d"
DROPIN = f"{DROPIN_DIR}/zz-molecule-slots-debug.conf"


def local(host, url, key=None, body=None, method=None, timeout=120, options=()):
    """(status, text) of a request made on the host itself; the key travels on stdin."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    status, text, _ = host_http.request(host.backend.name, url, method, headers, body, timeout, options=options)
    return status, text


def counter(text, name):
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def wait_health(host, base, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if local(host, base + "/health", timeout=10)[0] == 200:
            return
        time.sleep(1)
    pytest.fail(f"{base}/health did not answer 200 within {seconds} s")


@pytest.fixture(scope="module")
def token(host):
    """A sign-in token of Open WebUI's admin (the password the role generated on the controller)."""
    password = (REPO / ".secrets" / HOST / "open-webui-admin").read_text().strip()
    status, body = signin((env_value(host, "WEBUI_ADMIN_EMAIL"), password))
    assert status == 200, body
    return body["token"]


@pytest.fixture(scope="module")
def key(host):
    return env_value(host, "RAG_OPENAI_API_KEY")


def test_open_webui_embeds_through_the_local_embedding_server(host):
    assert env_value(host, "RAG_EMBEDDING_ENGINE") == "openai"
    assert env_value(host, "RAG_OPENAI_API_BASE_URL") == f"http://127.0.0.1:{EMBED_PORT}/v1"
    assert env_value(host, "RAG_EMBEDDING_MODEL") == "tiny-embed"
    # The character splitter: the token splitter fetches tiktoken's encoding from the internet.
    assert env_value(host, "RAG_TEXT_SPLITTER") == "character"
    assert (env_value(host, "CHUNK_SIZE"), env_value(host, "RAG_TOP_K")) == ("1200", "5")


def test_embedding_server_listens_on_loopback_only_and_wants_the_key(host, key):
    assert host.service("llm-embeddings").is_running
    assert host.service("llm-embeddings").is_enabled
    assert host.socket(f"tcp://127.0.0.1:{EMBED_PORT}").is_listening
    for address in ("0.0.0.0", "::"):
        assert not host.socket(f"tcp://{address}:{EMBED_PORT}").is_listening
    base = f"http://127.0.0.1:{EMBED_PORT}"
    body = {"model": "tiny-embed", "input": ["a sentence"]}
    assert local(host, base + "/v1/embeddings", body=body)[0] == 401
    assert local(host, base + "/v1/embeddings", key="sk-wrong-" + secrets.token_hex(8), body=body)[0] == 401
    status, text = local(host, base + "/v1/embeddings", key=key, body=body)
    assert status == 200, text
    assert len(json.loads(text)["data"][0]["embedding"]) == 128  # the tiny model's hidden size
    # The model file was staged by model_store with its licence notice and checksums.
    assert host.file("/var/lib/llm/models/embeddings/tiny-embed/tiny-embed-q4_k_m.gguf").exists
    assert "Apache-2.0" in host.file("/var/lib/llm/models/embeddings/tiny-embed/NOTICE").content_string
    assert host.run("cd /var/lib/llm/models/embeddings/tiny-embed && sha256sum --check --strict SHA256SUMS").rc == 0


@pytest.fixture()
def engine_prompts_visible(host):
    """llama-server with its slots' prompt text in /slots, for this check only."""
    host.check_output(f"mkdir -p {DROPIN_DIR} && printf '[Service]\\nEnvironment=LLAMA_SERVER_SLOTS_DEBUG=1\\n' > {DROPIN}"
                      " && systemctl daemon-reload && systemctl restart llamacpp")
    try:
        wait_health(host, ENGINE_BACKEND)
        yield
    finally:
        host.check_output(f"rm -f {DROPIN} && systemctl daemon-reload && systemctl restart llamacpp")
        wait_health(host, ENGINE_BACKEND)


def knowledge_base(host, token, key):
    """A knowledge base holding one uploaded text file with a unique word; (its id, name, the word). The embedding
    server must have embedded it (its token counter moved)."""
    auth = {"Authorization": f"Bearer {token}"}
    word = "KESTREL" + secrets.token_hex(3).upper()
    text = (f"Harbour office notes.\nThe vault code of the harbour office is {word}.\n"
            "The ferry leaves at nine and returns at five.\n")
    doc = f"/tmp/molecule-rag-{word}.txt"
    host.check_output(f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {doc}")
    assert host.file(doc).content_string == text

    base = f"http://127.0.0.1:{EMBED_PORT}"
    status, before = local(host, base + "/metrics", key=key)
    assert status == 200, before
    embedded_before = counter(before, "llamacpp:prompt_tokens_total")

    name = f"harbour {word.lower()}"
    status, body = curl_json("/api/v1/knowledge/create", "POST", headers=auth,
                             body={"name": name, "description": "RAG check"})
    assert status == 200, body
    knowledge = body["id"]
    # Upload and embed at once (process_in_background=false): the answer comes after the file was processed.
    status, raw, _ = curl("/api/v1/files/?process=true&process_in_background=false", "POST", headers=auth,
                          options=[f'form = "file=@{doc};type=text/plain"'])
    assert status == 200, raw
    file_id = json.loads(raw)["id"]
    status, body = curl_json(f"/api/v1/knowledge/{knowledge}/file/add", "POST", headers=auth, body={"file_id": file_id})
    assert status == 200, body
    host.run(f"rm -f {doc}")

    status, after = local(host, base + "/metrics", key=key)
    assert counter(after, "llamacpp:prompt_tokens_total") > embedded_before, "the embedding server embedded nothing"
    return knowledge, name, word


def assert_engine_prompt_holds(host, key, word, question):
    status, slots = local(host, ENGINE_BACKEND + "/slots", key=key)
    assert status == 200, slots
    prompts = [slot.get("prompt", "") for slot in json.loads(slots)]
    assert any(word in p and question in p for p in prompts), (
        "no slot of llama-server holds a prompt with the document's text and the question: "
        + json.dumps([p[-600:] for p in prompts])[:3000])


def test_a_knowledge_base_document_reaches_the_engines_prompt(host, key, token, engine_prompts_visible):
    knowledge, _, word = knowledge_base(host, token, key)
    model = env_value(host, "DEFAULT_MODELS").split(",")[0]
    status, body = curl_json("/api/chat/completions", "POST", headers={"Authorization": f"Bearer {token}"},
                             timeout=300, body={
        "model": model, "stream": False, "max_tokens": 8,
        "messages": [{"role": "user", "content": "What is the vault code of the harbour office?"}],
        "files": [{"type": "collection", "id": knowledge}]})
    assert status == 200, body
    assert_engine_prompt_holds(host, key, word, "What is the vault code")


def test_a_knowledge_base_chat_in_the_browser(host, key, token, engine_prompts_visible):
    """What a person does: in the chat page, type # and pick the knowledge base, then ask; the reply streams in and
    the engine's prompt held the document. Screenshots: .cache/reports/browser-rag*.png."""
    from playwright.sync_api import sync_playwright

    _, name, word = knowledge_base(host, token, key)
    port, chromium, shots = browser_setup()
    email = env_value(host, "WEBUI_ADMIN_EMAIL")
    password = (REPO / ".secrets" / HOST / "open-webui-admin").read_text().strip()
    question = "Which vault code does the harbour office use?"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(60_000)
        try:
            page.goto(f"https://localhost:{port}/", wait_until="networkidle")
            page.fill("#email", email)
            page.fill("#password", password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/auth" not in url)
            try:
                page.get_by_role("button", name="Okay, Let's Go!").click(timeout=10_000)
            except Exception:  # noqa: BLE001 - shown once per user and version; absent later
                pass
            page.locator("#chat-input").click()
            # "#" opens the knowledge menu ("Collections"), filtered by what follows: pick the knowledge base by name.
            page.keyboard.type("#harbour")
            page.get_by_text(name, exact=True).first.click()
            page.screenshot(path=str(shots / "browser-rag-attached.png"))
            page.locator("#chat-input").click()
            page.keyboard.type(question)
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile(r"/c/[0-9a-f-]+$"))
            page.locator("button[aria-label=Regenerate]").last.wait_for(timeout=300_000)
            page.screenshot(path=str(shots / "browser-rag.png"))
        except Exception:
            page.screenshot(path=str(shots / "browser-rag-failed.png"))
            raise
        finally:
            browser.close()
    assert_engine_prompt_holds(host, key, word, question)


def test_no_process_of_the_stack_reached_outside(host):
    """The RAG path made no outbound connection: the embedding server, Open WebUI and the engine are fenced to
    loopback (systemd IPAddressAllow) and their journals show no failed name lookups or connections out."""
    for unit in ("llm-embeddings", "open-webui", "llamacpp"):
        allow = host.check_output(f"systemctl show -p IPAddressAllow --value {unit}")
        assert "127.0.0.0/8" in allow or "localhost" in allow, f"{unit}: IPAddressAllow={allow!r}"
    journal = host.check_output("journalctl -u llm-embeddings -u open-webui --since '-30min' -o cat --no-pager")
    lookups = [line for line in journal.splitlines()
               if re.search(r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
                            r"Failed to establish a new connection", line)]
    assert not lookups, "\n".join(lookups[:20])
