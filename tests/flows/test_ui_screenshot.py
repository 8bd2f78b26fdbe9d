"""The Prefect UI's run form for ``train-identity``, looked at with headless Chromium.

``train-identity`` is served against the session's Prefect server (``prefect_server``) and Chromium opens the
deployment's "custom run" page in both of Prefect 3.8.8's UIs: ``/v2/deployments/deployment/<id>/run`` (the
default: ``/`` redirects to ``/v2/``) and ``/deployments/deployment/<id>/run`` (V1, "Switch to V1 UI"). Their
rendered DOMs together must show every typed parameter with its default, the method drop-down with every registered
method, the dict/None switch of ``overrides`` and a number input for ``seed`` (V2 renders the drop-down's choices
only when it is opened; V1's native select holds them all but keeps typed values out of the DOM). The V2 form is
screenshotted (not blank); with ``TALKHEAD_UPDATE_SCREENSHOT=1`` the screenshot replaces
docs/prefect_train_identity_form.png.

``python -m flows.ui`` (``make ui``) is checked here too: it refuses a taken port before starting anything, and
starts both servers, answers on both addresses and stops them on Ctrl-C.

The screenshot test is skipped where no Chromium (Debian's ``chromium``, ``chromium-browser`` or
``google-chrome``) is installed: nothing else here needs apt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flows.ui import stop_groups
from tests.flows.conftest import free_port
from tests.flows.workspace import REPOSITORY

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEPLOYMENT = "train-identity/train-identity"
SCREENSHOT = REPOSITORY / "docs" / "prefect_train_identity_form.png"
SERVE_TIMEOUT = 180.0  # importing the flows and registering the deployment: ~15 s on a busy 2-core machine
RENDER_TRIES = 4  # the SPA loads its chunks and the deployment over the API: a slow first load gets retried
BROWSER_TIMEOUT = 120.0
WINDOW = (1400, 1100)  # the whole form (with room for parameter descriptions), little empty page below
MIN_COLOURS = 64  # a blank page or a lone spinner has a handful; the form has thousands (anti-aliased text)
PARAMETERS = ("method", "identity", "overrides", "seed", "root")
"""train-identity's parameters, in the form's order."""
DEFAULT_METHOD = "r2talker"


def _browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


BROWSER = _browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason=f"no headless browser found (looked for {', '.join(BROWSERS)}); on Debian: apt-get install chromium")


def _deployment_id(process: subprocess.Popen, log_path: Path) -> str:
    """The served deployment's id, once ``flows.serve`` has registered it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    started = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            try:
                return str(client.read_deployment_by_name(DEPLOYMENT).id)
            except ObjectNotFound:
                pass
            if process.poll() is not None:
                pytest.fail(f"flows.serve exited with {process.returncode}; log tail:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}")
            if time.monotonic() - started > SERVE_TIMEOUT:
                pytest.fail(f"{DEPLOYMENT} not registered after {SERVE_TIMEOUT:.0f} s; log tail:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(1)


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--no-first-run", "--disable-extensions", "--mute-audio",
               f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               "--virtual-time-budget=15000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT,
                          stdin=subprocess.DEVNULL)


def _common_problems(dom: str) -> list[str]:
    found: list[str] = []
    if "can't connect to server api" in dom.lower():
        found.append("the UI cannot reach the server's API")
    labels = re.findall(r">\s*([A-Za-z_]+) \(Optional\)\s*<", dom)
    if labels != list(PARAMETERS):
        found.append(f"parameter labels {labels}, expected {list(PARAMETERS)}")
    return found


def _v2_problems(dom: str) -> list[str]:
    """The default UI: labels, the method drop-down showing its default, identity's and root's defaults, the
    dict/None tabs of overrides, seed as a number input >= 0 holding 0."""
    found = _common_problems(dom)
    method = re.findall(r'aria-label="Select method"[^>]*>([^<]*)<', dom)
    if method != [DEFAULT_METHOD]:
        found.append(f"method drop-down showing {method}, expected [{DEFAULT_METHOD!r}]")
    texts = re.findall(r"<textarea[^>]*>([^<]*)</textarea>", dom)
    if texts != ["S001", "."]:
        found.append(f"text inputs holding {texts}, expected ['S001', '.'] (identity, root)")
    if not re.search(r'role="tab"[^>]*>dict<', dom) or not re.search(r'role="tab"[^>]*>None<', dom):
        found.append("no dict/None tabs for overrides")
    numbers = re.findall(r'<input[^>]*type="number"[^>]*>', dom)
    if len(numbers) != 1 or 'min="0"' not in numbers[0] or 'value="0"' not in numbers[0]:
        found.append(f"seed's input {numbers}, expected one number input with min 0 and value 0")
    return found


def _v1_problems(dom: str) -> list[str]:
    """The V1 UI: labels, a native select with every registered method and the default selected."""
    from talkhead_models.methods import method_names

    found = _common_problems(dom)
    select = re.search(r"<select[^>]*>(.*?)</select>", dom, flags=re.S)
    options = re.findall(r'<option[^>]*value="([^"]*)"', select.group(1)) if select else []
    if options != method_names():
        found.append(f"method drop-down {options}, expected {method_names()}")
    selected = re.findall(r'<option[^>]*selected=""[^>]*value="([^"]*)"', select.group(1)) if select else []
    if selected != [DEFAULT_METHOD]:
        found.append(f"method default {selected}, expected [{DEFAULT_METHOD!r}]")
    if "schema-form-property-any-of-input" not in dom:
        found.append("no dict/None choice for overrides")
    if 'type="number"' not in dom:
        found.append("no number input for seed")
    return found


def _rendered(browser: str, profile: Path, url: str, check, dump: Path) -> None:
    """Fail unless the page at ``url`` renders a DOM that ``check`` finds nothing wrong with (a few tries)."""
    for _ in range(RENDER_TRIES):
        result = _chromium(browser, profile, "--dump-dom", url)
        problems = check(result.stdout)
        if not problems:
            return
        time.sleep(2)
    dump.write_text(result.stdout)
    pytest.fail(f"the run form at {url} after {RENDER_TRIES} tries: {'; '.join(problems)} (DOM in {dump}); "
                f"chromium stderr tail:\n{result.stderr[-2000:]}")


def _distinct_colours(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours) if colours is not None else 1 << 20


def _screenshot(browser: str, profile: Path, url: str, png: Path) -> None:
    from PIL import Image

    for _ in range(RENDER_TRIES):
        png.unlink(missing_ok=True)
        result = _chromium(browser, profile, f"--screenshot={png}", url)
        if png.is_file() and _distinct_colours(png) >= MIN_COLOURS:
            break
        time.sleep(2)
    assert png.is_file(), f"no screenshot of {url}; chromium stderr tail:\n{result.stderr[-2000:]}"
    with Image.open(png) as image:
        assert image.size == WINDOW
    colours = _distinct_colours(png)
    assert colours >= MIN_COLOURS, f"the screenshot of {url} looks blank ({colours} distinct colours)"


@pytest.mark.slow
@needs_browser
def test_train_identity_run_form_screenshot(prefect_server, tmp_path):
    browser = BROWSER
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "flows.serve", "--flows", "train-identity"],
                                 cwd=REPOSITORY, env={**os.environ, **prefect_server.env},
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        deployment_id = _deployment_id(serve, log_path)
        profile = tmp_path / "chromium-profile"
        v2_url = f"{prefect_server.ui_url}/v2/deployments/deployment/{deployment_id}/run"
        v1_url = f"{prefect_server.ui_url}/deployments/deployment/{deployment_id}/run"
        _rendered(browser, profile, v2_url, _v2_problems, tmp_path / "form_v2.html")
        _rendered(browser, profile, v1_url, _v1_problems, tmp_path / "form_v1.html")
        png = tmp_path / SCREENSHOT.name
        _screenshot(browser, profile, v2_url, png)
        if os.environ.get("TALKHEAD_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, SCREENSHOT)
    finally:
        stop_groups([serve])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def test_ui_refuses_a_taken_port(caplog):
    from flows import ui

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level("ERROR", logger="flows.ui"):
            assert ui.main(["--prefect-port", str(free_port()), "--mlflow-port", str(port)]) == 1
    assert f"port {port} on 127.0.0.1 is taken" in caplog.text
    assert "--mlflow-port PORT" in caplog.text
    caplog.clear()
    with caplog.at_level("ERROR", logger="flows.ui"):
        assert ui.main(["--prefect-port", "4999", "--mlflow-port", "4999"]) == 1
    assert "give them different ports" in caplog.text


@pytest.mark.slow
def test_ui_starts_both_and_stops_on_ctrl_c(tmp_path):
    prefect_port, mlflow_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if key != "TALKHEAD_MLFLOW_URI"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect_home")
    out_path = tmp_path / "ui.out"
    with open(out_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "flows.ui", "--prefect-port", str(prefect_port),
                                    "--mlflow-port", str(mlflow_port), "--root", str(tmp_path),
                                    "--log-dir", str(tmp_path / "logs")],
                                   cwd=REPOSITORY, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   # SIGINT ignored, as a shell's background job (`make ui &`) inherits it: Ctrl-C
                                   # must stop the servers all the same
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        started = time.monotonic()
        while "make serve" not in out_path.read_text(errors="replace"):
            assert process.poll() is None, f"flows.ui exited with {process.returncode}:\n{out_path.read_text()}"
            assert time.monotonic() - started < SERVE_TIMEOUT, f"flows.ui not ready:\n{out_path.read_text()}"
            time.sleep(0.5)
        printed = out_path.read_text()
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in printed
        assert f"MLflow UI:  http://127.0.0.1:{mlflow_port}" in printed
        assert f"PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api make serve" in printed
        assert _answers(f"http://127.0.0.1:{prefect_port}/api/health")
        assert _answers(f"http://127.0.0.1:{mlflow_port}/health")
        with urllib.request.urlopen(f"http://127.0.0.1:{prefect_port}/ui-settings", timeout=5) as response:
            assert json.load(response)["api_url"] == f"http://127.0.0.1:{prefect_port}/api"
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=60) == 0, out_path.read_text()
        assert not _answers(f"http://127.0.0.1:{prefect_port}/api/health")
        assert not _answers(f"http://127.0.0.1:{mlflow_port}/health")
    finally:
        stop_groups([process])
