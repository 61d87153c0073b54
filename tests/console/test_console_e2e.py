"""The operator console end to end: a real `taskgate serve` process with Redis memory, tool
experts and API keys, driven in headless Chromium.

It routes a request and reads the bars, answers a clarification, adds and deletes an
exemplar and sees routing change, promotes a logged request, reloads a broken config and
sees the error, and runs an evaluation. Screenshots (desktop 1280x800 and a 390x844
phone) go to test-artifacts/console/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.support.browser import Browser, chromium
from tests.support.gateway import REPO_ROOT, gateway_process
from tests.support.keys import auth_block, entry, token
from tests.support.redis import RedisServer, plain_redis

pytestmark = pytest.mark.integration

ARTIFACTS = REPO_ROOT / "test-artifacts" / "console"
EXPERTS = """
router: {threshold: 0.5, margin: 0.04}
experts:
  - name: calculator
    kind: tool
    tool: calculator
    ask: do arithmetic
    description: arithmetic with numbers, percentages and powers
    examples: [what is 15% of 80, compute 3.5 * (12 - 4), what's 7 times 6, square root of 144]
  - name: units
    kind: tool
    tool: units
    ask: convert units
    description: converting measurements between units
    examples: [convert 5 miles to km, how many ounces in 2 kg, 30 celsius in fahrenheit]
"""
ADMIN, USER = "console-admin", "console-user"
CLEAR = "what is 15% of 80"  # dispatches to calculator
UNSURE = "2 to the power of 10"  # below the threshold for both: the gateway asks
LEARNABLE = "100 / 8"  # also below it, until it is an exemplar
PENDING = "\N{HORIZONTAL ELLIPSIS}"  # the answer's label until its route is in
NONE_YET = "\N{EN DASH}"  # a number the page cannot show yet
PHONE = (390, 844)
DESKTOP = (1280, 800)


class Console:
    """The console page, as a test uses it."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser = browser
        self.driver: WebDriver = browser.driver
        self.url = url

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def open(self, key: str) -> None:
        self.driver.get(f"{self.url}/console/")
        dialog = self.browser.wait(lambda d: self._open_dialog())
        dialog.find_element(By.ID, "key-input").send_keys(key)
        dialog.find_element(By.ID, "key-submit").click()
        self.browser.wait(lambda d: self._open_dialog() is None)

    def _open_dialog(self) -> WebElement | None:
        dialog = self.find("#login")
        return dialog if dialog.get_attribute("open") is not None else None

    def tab(self, name: str) -> None:
        self.find(f"#tab-{name}").click()
        self.browser.wait(lambda d: self.find(f"#{name}").is_displayed())

    def ask(self, text: str) -> tuple[str, str]:
        """Send `text` in the playground; (meta, content) of the answer once it is in."""
        self.tab("playground")
        answers = len(self.all("#conversation li.assistant"))
        self.find("#ask-input").send_keys(text)
        self.find("#ask-send").click()
        return self._answer(answers)

    def choose(self, option: str) -> tuple[str, str]:
        answers = len(self.all("#conversation li.assistant"))
        self.find(f"#clarify-options button[data-option='{option}']").click()
        return self._answer(answers)

    def _answer(self, before: int) -> tuple[str, str]:
        def done(driver: WebDriver) -> tuple[str, str] | None:
            items = self.all("#conversation li.assistant")
            if len(items) <= before or not self.find("#ask-send").is_enabled():
                return None
            meta = items[-1].find_element(By.CLASS_NAME, "meta").text
            if meta == PENDING:
                return None
            return meta, items[-1].find_element(By.CLASS_NAME, "content").text

        return self.browser.wait(done)

    def new_conversation(self) -> None:
        self.tab("playground")
        self.find("#ask-reset").click()

    def field(self, name: str) -> str:
        return self.find(f"#route-summary dd[data-field='{name}']").text

    def bars(self) -> list[tuple[str, float, bool]]:
        """(expert, score, chosen) of each bar, top to bottom."""
        return [
            (
                str(bar.get_attribute("data-expert")),
                float(str(bar.get_attribute("data-score"))),
                "chosen" in str(bar.get_attribute("class")),
            )
            for bar in self.all("#route-chart rect.bar")
        ]

    def support(self) -> list[list[str]]:
        """[text, expert, similarity, source] of the exemplars shown behind the decision."""
        rows = self.all("#support tbody tr")
        return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]

    def exemplar_rows(self) -> dict[str, WebElement]:
        return {row.find_element(By.CLASS_NAME, "text").text: row
                for row in self.all("#exemplars-table tbody tr")}  # fmt: skip

    def exemplar(self, text: str) -> list[str] | None:
        """The cells of the exemplar row with this text, once it is listed."""
        row = self.exemplar_rows().get(text)
        return None if row is None else [td.text for td in row.find_elements(By.TAG_NAME, "td")]

    def expert_row(self, name: str) -> dict[str, str]:
        row = self.find(f"#experts-table tr[data-expert='{name}']")
        heads = [th.text for th in self.all("#experts-table thead th")]
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        return dict(zip(heads, cells, strict=True))

    def delete_exemplar(self, text: str) -> None:
        def press(driver: WebDriver) -> None:
            self.exemplar_rows()[text].find_element(By.CSS_SELECTOR, "button.danger").click()

        self.browser.act(press)
        self.browser.wait(lambda d: text not in self.exemplar_rows())

    def fits(self) -> bool:
        """No sideways scrolling: the page is as wide as the viewport."""
        width = self.driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        return bool(width[0] <= width[1])

    def shoot(self, name: str) -> None:
        self.browser.viewport(*DESKTOP)
        self.browser.screenshot(f"{name}-desktop")
        self.browser.viewport(*PHONE, mobile=True)
        assert self.fits(), f"{name}: wider than a phone"
        self.browser.screenshot(f"{name}-phone")
        self.browser.viewport(*DESKTOP)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with RedisServer(plain_redis()) as redis:
        folder = tmp_path_factory.mktemp("console")
        path = folder / "taskgate.yaml"
        keys = auth_block(entry(ADMIN, tenant="ops", admin=True), entry(USER, tenant="ops"))
        path.write_text(keys + f"memory: {{backend: redis, url: '{redis.url}'}}\n" + EXPERTS)
        yield path


@pytest.fixture(scope="module")
def url(config_file: Path) -> Iterator[str]:
    with gateway_process(config_file, name="taskgate-console") as base:
        yield base


@pytest.fixture(scope="module")
def console(url: str) -> Iterator[Console]:
    with chromium(ARTIFACTS) as browser:
        browser.viewport(*DESKTOP)
        page = Console(browser, url)
        page.open(token(ADMIN))
        yield page
        assert browser.script_errors() == []


def test_a_key_without_admin_rights_is_refused(console: Console) -> None:
    console.find("#key-change").click()
    dialog = console.browser.wait(lambda d: console._open_dialog())
    field = dialog.find_element(By.ID, "key-input")
    field.send_keys(token(USER))
    dialog.find_element(By.ID, "key-submit").click()
    console.browser.wait(lambda d: "not an admin key" in console.find("#key-error").text)
    field.clear()
    field.send_keys(token(ADMIN))
    dialog.find_element(By.ID, "key-submit").click()
    console.browser.wait(lambda d: console._open_dialog() is None)


def test_route_a_request_and_read_the_bars(console: Console) -> None:
    meta, answer = console.ask(CLEAR)
    assert (meta, answer) == ("dispatch → calculator", "15% of 80 = 12")
    assert console.field("action") == "dispatch"
    assert console.field("expert") == "calculator"
    bars = console.bars()
    assert [(expert, chosen) for expert, _, chosen in bars] == [
        ("calculator", True), ("units", False)
    ]  # fmt: skip
    assert bars[0][1] == pytest.approx(1.0, abs=1e-4)
    assert bars[1][1] < 0.5
    threshold = console.find("#route-chart line.threshold")
    assert float(str(threshold.get_attribute("data-threshold"))) == 0.5
    band = console.find("#route-chart rect.margin-band")
    assert float(str(band.get_attribute("data-margin"))) == 0.04
    assert console.support()[0] == [CLEAR, "calculator", "1.000", "config"]
    console.shoot("playground")


def test_answer_a_clarification(console: Console) -> None:
    console.new_conversation()
    meta, question = console.ask(UNSURE)
    assert meta == "clarify"
    assert console.field("action") == "clarify"
    assert console.find("#clarify").is_displayed()
    assert console.field("question") == question
    options = [b.get_attribute("data-option") for b in console.all("#clarify-options button")]
    assert sorted(str(option) for option in options) == ["calculator", "units"]
    assert all(score < 0.5 for _, score, _ in console.bars())
    console.shoot("clarification")
    meta, answer = console.choose("calculator")
    assert (meta, answer) == ("dispatch → calculator", "2^10 = 1024")
    assert console.field("reason") == "clarified_by_name"
    assert not console.find("#clarify").is_displayed()
    user_turns = [li.text for li in console.all("#conversation li.user")]
    assert user_turns == [UNSURE, "calculator"]
    console.shoot("clarified")  # docs/console.png is this one


def test_add_and_delete_an_exemplar_and_see_routing_change(console: Console) -> None:
    console.new_conversation()
    assert console.ask(LEARNABLE)[0] == "clarify"
    console.tab("memory")
    console.find("#add-text").send_keys(LEARNABLE)
    console.browser.act(lambda d: Select(console.find("#add-expert")).select_by_value("calculator"))
    console.find("#add-submit").click()
    cells = console.browser.wait(lambda d: console.exemplar(LEARNABLE))
    assert cells[1:4] == ["calculator", "api", "yes"]
    console.shoot("memory")

    console.new_conversation()
    meta, answer = console.ask(LEARNABLE)
    assert (meta, answer) == ("dispatch → calculator", "100 / 8 = 12.5")
    expert, score, _ = console.bars()[0]
    assert expert == "calculator"
    assert score == pytest.approx(1.0, abs=1e-4)
    assert console.support()[0] == [LEARNABLE, "calculator", "1.000", "api"]

    console.tab("memory")
    console.delete_exemplar(LEARNABLE)
    console.new_conversation()
    assert console.ask(LEARNABLE)[0] == "clarify"


def test_promote_a_logged_request(console: Console) -> None:
    console.tab("memory")

    def promote(driver: WebDriver) -> bool:
        for row in console.all("#requests-table tbody tr"):
            cells = row.find_elements(By.TAG_NAME, "td")
            if cells[1].text == LEARNABLE and cells[2].text == "clarify":
                Select(row.find_element(By.TAG_NAME, "select")).select_by_value("units")
                row.find_element(By.TAG_NAME, "button").click()
                return True
        return False

    console.browser.wait(promote)
    cells = console.browser.wait(lambda d: console.exemplar(LEARNABLE))
    assert cells[1:3] == ["units", "api"]
    # The playground asks as a default client does (no temperature): no cache lookups.
    assert console.find("#cache-stats").text.startswith("cache lookups 0")
    assert console.find("#cache-hit-rate").text == NONE_YET
    Select(console.find("#filter-source")).select_by_value("config")
    console.browser.wait(lambda d: CLEAR in console.exemplar_rows())
    Select(console.find("#filter-source")).select_by_value("")
    console.delete_exemplar(LEARNABLE)


def test_experts_show_activity(console: Console) -> None:
    console.tab("experts")

    # Three answers from calculator so far (and the table shows them once it has reloaded).
    def busy_calculator(driver: WebDriver) -> dict[str, str] | None:
        row = console.expert_row("calculator")
        return row if int(row["requests"]) >= 3 else None

    row = console.browser.wait(busy_calculator)
    assert (row["kind"], row["health"]) == ("tool", "healthy")
    assert row["latency p50 / p95"].endswith(" ms")
    assert int(row["examples"]) == 4


def test_reload_a_broken_config_and_see_the_error(console: Console, config_file: Path) -> None:
    good = config_file.read_text()
    config_file.write_text(good.replace("threshold: 0.5", "threshold: 5"))
    try:
        console.tab("experts")
        console.find("#reload").click()
        error = console.browser.wait(lambda d: console.all("#reload-error"))[0]
        assert error.get_attribute("data-code") == "invalid_config"
        assert "invalid config, nothing changed" in error.text
        assert "router.threshold" in error.text
        console.shoot("experts-reload-error")
    finally:
        config_file.write_text(good)
    console.find("#reload").click()
    done = console.browser.wait(lambda d: console.all("#reload-ok"))[0]
    assert done.text == "Reloaded: calculator, units"


def test_run_an_evaluation(console: Console, tmp_path: Path) -> None:
    templates = {
        "weather": ["will it rain in {}", "forecast for {}", "is it sunny in {}"],
        "flights": ["book a flight to {}", "plane ticket to {}", "next flight to {}"],
    }
    places = ["paris", "berlin", "tokyo", "lima", "oslo", "cairo"]
    rows = [(t.format(p), label) for label, ts in templates.items() for t in ts for p in places]
    parts = {
        "train": [*rows[::2], ("write a poem", "oos")],
        "test": [*rows[1::2], ("who painted the mona lisa", "oos")],
    }
    files = {name: tmp_path / f"{name}.jsonl" for name in parts}
    for name, part in parts.items():
        lines = [json.dumps({"text": text, "label": label}) + "\n" for text, label in part]
        files[name].write_text("".join(lines))
    console.tab("evaluation")
    console.find("#eval-train").send_keys(str(files["train"]))
    console.find("#eval-test").send_keys(str(files["test"]))
    console.find("#eval-run").click()
    console.browser.wait(lambda d: console.find("#eval-result").is_displayed(), timeout=180)
    metrics = {row.get_attribute("data-metric"): row.find_element(By.TAG_NAME, "td").text
               for row in console.all("#eval-metrics tr[data-metric]")}  # fmt: skip
    assert metrics["n_test"] == "19"
    assert 0.0 <= float(metrics["in_scope_accuracy"]) <= 1.0
    assert console.all("#eval-curve path.line-accuracy")
    assert console.all("#eval-curve path.line-recall")
    confused = console.all("#eval-confusions rect.bar") or console.all("#eval-confusions text")
    assert confused
    console.shoot("evaluation")
