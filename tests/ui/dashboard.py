"""User stories of the dashboard (/ui/) in headless Chromium, driven by
Playwright for Python with the system's browser (/usr/bin/chromium; no
browser build is ever downloaded). Run by tests/dashboard.rs, which starts
real Chroma, moto S3 and the daemon and passes them in the environment:

  DASH_URL          the daemon (http://127.0.0.1:PORT)
  DASH_S3_ENDPOINT  moto, DASH_BUCKET a bucket holding docs/a.md
  DASH_ADMIN_TOKEN  a token for every database; DASH_TEAM_TOKEN one for `team` only
  DASH_SHOTS        directory for the screenshots
  DASH_PHASE        `main` (Chroma up) or `cancel` (the harness stopped Chroma)

Exits non-zero (an assertion or a Playwright timeout) when a story fails.
"""
import os
import re
import sys

import boto3
from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("DASH_CHROMIUM", "/usr/bin/chromium")
URL = os.environ["DASH_URL"]
SHOTS = os.environ["DASH_SHOTS"]
PHASE = os.environ.get("DASH_PHASE", "main")
ADMIN = os.environ["DASH_ADMIN_TOKEN"]
TEAM = os.environ["DASH_TEAM_TOKEN"]
BUCKET = os.environ["DASH_BUCKET"]
ENDPOINT = os.environ["DASH_S3_ENDPOINT"]
# A job may take a while on a loaded 2-CPU machine (model load, embedding).
SLOW = 180_000


def shot(page, name):
    path = os.path.join(SHOTS, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}", flush=True)


def sign_in(page, token):
    page.goto(f"{URL}/ui/")
    expect(page.get_by_label("API token")).to_be_visible()
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Sources")).to_be_visible()


def fill_source_form(page, kind, database, settings):
    """Fills the create form, whose fields the dashboard generates from the
    kind's schema: each labelled after its setting (`bucket_name` →
    "Bucket name"); text and numbers are typed, booleans (un)checked,
    lists given one item per line."""
    form = page.locator("#create-source")
    form.get_by_label("Type", exact=True).select_option(kind)
    form.get_by_label("Database", exact=True).fill(database)
    for field, value in settings.items():
        control = form.get_by_label(field.replace("_", " ").capitalize(), exact=True)
        if isinstance(value, bool):
            control.set_checked(value)
        elif isinstance(value, list):
            control.fill("\n".join(value))
        else:
            control.fill(str(value))


def source_row(page, bucket_collection):
    return page.locator("#sources-table tbody tr", has_text=bucket_collection)


def invocation_rows(page):
    return page.locator("#invocations-table tbody tr[data-invocation]")


def main_phase(browser):
    page = browser.new_page()
    page.on("console", lambda message: print(f"console: {message.text}", flush=True))

    # Sign-in: a wrong token is refused with a clear message.
    page.goto(f"{URL}/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    refusal = page.locator("#signin-error")
    expect(refusal).to_contain_text("refused")
    expect(refusal).to_contain_text("401")
    shot(page, "01-sign-in-refused")
    page.get_by_label("API token").fill(ADMIN)
    page.keyboard.press("Enter")  # the form works from the keyboard
    expect(page.get_by_role("heading", name="Sources")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('chroma-syncd-token')") == ADMIN

    # Create a source from the form; the API's refusal is shown first.
    fill_source_form(page, "s3", "testdb", {"region": "us-east-1"})
    page.get_by_role("button", name="Create source").click()
    expect(page.locator("#create-result")).to_contain_text("400")
    expect(page.locator("#create-result")).to_contain_text("bucket_name")
    settings = {
        "bucket_name": BUCKET, "region": "us-east-1", "collection_name": "dash-ui",
        "aws_credential_id": 0, "endpoint_url": ENDPOINT, "force_path_style": True,
    }
    fill_source_form(page, "s3", "testdb", settings)
    page.get_by_role("button", name="Create source").click()
    expect(page.locator("#create-result")).to_contain_text("created")
    row = source_row(page, "dash-ui")
    expect(row).to_have_count(1)
    shot(page, "02-sources")
    generated_form_of_another_kind(page)

    # Sync an object and watch it go from pending to complete, no reload:
    # the page makes no list request meanwhile, the event stream does it.
    page.evaluate("window.__notReloaded = true")
    listed = []
    page.on("request", lambda r: listed.append(r.url) if "/api/v1/invocations?" in r.url else None)
    row.get_by_label("Object key").fill("docs/a.md")
    row.get_by_role("button", name="Sync now").click()
    expect(page.locator("#notice")).to_contain_text("created")
    page.get_by_role("link", name="Invocations", exact=True).click()
    expect(page.get_by_role("heading", name="Invocations")).to_be_visible()
    newest = invocation_rows(page).first
    expect(newest).to_contain_text("docs/a.md")
    expect(newest.locator(".status")).to_have_text("complete", timeout=SLOW)
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
    assert not listed, f"the page polled the list: {listed}"
    expect(page.locator("#live")).to_have_text("Live")
    shot(page, "03-invocations")
    # 200% zoom of a 1280-pixel window: the page reflows, only tables scroll.
    page.set_viewport_size({"width": 640, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth <= 640"), "the page overflows at 200%"
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    shot(page, "03b-invocations-narrow")
    page.set_viewport_size({"width": 1280, "height": 900})

    # The detail of the completed invocation: stats and time by stage.
    newest.get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Invocation")).to_be_visible()
    expect(page.locator("#detail-stats")).to_contain_text("Chunks written")
    stats = page.locator("#detail-stats tr", has_text="Chunks written").locator("td")
    assert int(stats.inner_text()) > 0, stats.inner_text()
    expect(page.locator("#detail-stages")).to_contain_text("Embedding")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("Trigger")
    expect(facts).to_contain_text("manual")
    expect(facts).to_contain_text("admin")  # created_by: the token's name
    expect(facts).to_contain_text("dash-ui")  # the collection
    expect(page.locator("main")).not_to_contain_text("[object")
    shot(page, "04-invocation-detail")

    # A failed invocation (the object is missing) is retried from the page
    # once the object exists: a new invocation with the same body completes.
    page.get_by_role("link", name="Sources", exact=True).click()
    row = source_row(page, "dash-ui")
    row.get_by_label("Object key").fill("docs/late.md")
    row.get_by_role("button", name="Sync now").click()
    page.get_by_role("link", name="Invocations", exact=True).click()
    failed = invocation_rows(page).filter(has_text="docs/late.md").first
    expect(failed.locator(".status")).to_have_text("failed", timeout=SLOW)
    expect(failed).to_contain_text("docs/late.md")
    boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name="us-east-1",
        aws_access_key_id=os.environ["DASH_S3_KEY_ID"],
        aws_secret_access_key=os.environ["DASH_S3_SECRET"],
    ).put_object(Bucket=BUCKET, Key="docs/late.md", Body=b"# Late\n\nIt arrived after all.\n")
    failed.get_by_role("button", name="Retry").click()
    expect(page.locator("#notice")).to_contain_text("Retried")
    late = invocation_rows(page).filter(has_text="docs/late.md")
    expect(late).to_have_count(2)
    expect(late.first.locator(".status")).to_have_text("complete", timeout=SLOW)
    expect(late.nth(1).locator(".status")).to_have_text("failed")
    shot(page, "05-retried")

    # Health, from /health and /metrics.
    page.get_by_role("link", name="Health", exact=True).click()
    expect(page.locator("#health-chroma")).to_contain_text("reachable")
    expect(page.locator("#health-pending")).to_contain_text("0")
    shot(page, "06-health")
    admin_jobs = invocation_count(page)
    page.close()

    # A token limited to database `team` sees its source, not testdb's,
    # and an invocation of testdb is refused (403) by the API.
    team = browser.new_context().new_page()
    sign_in(team, TEAM)
    table = team.locator("#sources-table tbody")
    expect(table).to_contain_text("team")
    expect(table).not_to_contain_text("testdb")
    assert "testdb" not in team.locator("#filter-database").inner_text()
    team.get_by_role("link", name="Invocations", exact=True).click()
    expect(team.locator("#live")).to_have_text("Live")
    expect(team.locator("#invocations-table tbody")).not_to_contain_text("docs/a.md")
    shot(team, "07-limited-token")
    assert admin_jobs >= 3, admin_jobs


def generated_form_of_another_kind(page):
    """The create form is built from the kind's schema: another kind brings
    its own fields, with their documentation and the daemon's defaults; a
    list is typed one item per line; the type filter knows the kind too."""
    kinds = page.evaluate(
        """async (token) => {
             const r = await fetch('/api/v1/source-types', {headers: {'x-chroma-token': token}});
             return (await r.json()).source_types;
           }""",
        ADMIN,
    )
    web = next(kind for kind in kinds if kind["type"] == "web_scrape")
    form = page.locator("#create-source")
    form.get_by_label("Type", exact=True).select_option("web_scrape")
    expect(page.locator("#new-type-about")).to_have_text(web["description"])
    expect(form.get_by_label("Bucket name", exact=True)).to_have_count(0)
    url = form.get_by_label("Starting url", exact=True)
    expect(url).to_have_attribute("aria-required", "true")
    expect(form).to_contain_text(web["schema"]["properties"]["starting_url"]["description"])
    depth = str(web["schema"]["properties"]["max_depth"]["default"])
    expect(form.get_by_label("Max depth", exact=True)).to_have_value(depth)
    shot(page, "02b-create-form-generated")
    fill_source_form(page, "web_scrape", "testdb", {
        "starting_url": "https://docs.example.com/start",
        "include_path_regexes": ["^/docs/", "^/guide/"],
        "page_limit": 25,
    })
    page.get_by_role("button", name="Create source").click()
    expect(page.locator("#create-result")).to_contain_text("created")
    created = page.locator("#create-result").inner_text().split()[1]
    source = page.evaluate(
        """async ([token, id]) => {
             const r = await fetch(`/api/v1/sources/${id}`, {headers: {'x-chroma-token': token}});
             return await r.json();
           }""",
        [ADMIN, created],
    )
    # Only what was typed, or changed from its default, is sent.
    assert source["web_scrape"] == {
        "starting_url": "https://docs.example.com/start",
        "page_limit": 25,
        "include_path_regexes": ["^/docs/", "^/guide/"],
    }, source
    row = page.locator(f"#sources-table tbody tr[data-source='{created}']")
    expect(row).to_contain_text(web["title"])
    expect(row.get_by_label("Target collection name")).to_be_visible()
    page.locator("#filter-type").select_option("web_scrape")
    expect(row).to_have_count(1)
    expect(source_row(page, "dash-ui")).to_have_count(0)
    page.locator("#filter-type").select_option("")
    expect(source_row(page, "dash-ui")).to_have_count(1)


def invocation_count(page):
    return page.evaluate(
        """async (token) => {
             const r = await fetch('/api/v1/invocations', {headers: {'x-chroma-token': token}});
             return (await r.json()).length;
           }""",
        ADMIN,
    )


def cancel_phase(browser):
    # Chroma is down: a job retries and cannot complete until cancelled.
    page = browser.new_page()
    sign_in(page, ADMIN)
    row = source_row(page, "dash-ui")
    row.get_by_label("Object key").fill("docs/a.md")
    row.get_by_role("button", name="Sync now").click()
    page.get_by_role("link", name="Invocations", exact=True).click()
    job = invocation_rows(page).first
    expect(job).to_contain_text("docs/a.md")
    expect(job.get_by_role("button", name="Cancel")).to_be_visible()
    expect(job.locator(".err")).to_have_text(re.compile("chroma", re.I), timeout=SLOW)  # its last error, while retrying
    shot(page, "08-retrying")
    job.get_by_role("button", name="Cancel").click()
    expect(job.locator(".status")).to_have_text("cancelled", timeout=SLOW)
    expect(job.get_by_role("button", name="Cancel")).to_have_count(0)
    shot(page, "09-cancelled")
    page.get_by_role("link", name="Health", exact=True).click()
    expect(page.locator("#health-chroma")).to_contain_text("unavailable")
    shot(page, "10-health-chroma-down")


def main():
    if not os.path.exists(CHROMIUM):
        sys.exit(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    os.makedirs(SHOTS, exist_ok=True)
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            (main_phase if PHASE == "main" else cancel_phase)(browser)
        finally:
            browser.close()
    print(f"dashboard {PHASE} stories passed", flush=True)


if __name__ == "__main__":
    main()
