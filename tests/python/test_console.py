"""The web console end to end, in a real headless Chromium (Debian's
`chromium` and `chromium-driver`, driven by Selenium) against the real
server: signing in with a password and with an access key, browsing
repositories → a repository → an image (pushed here: a Debian-like image
scanned on push against OSV records, an index of two platforms, an SBOM that
refers to an image), the lifecycle editor and its preview, a user allowed one
repository seeing nothing of another, CSRF and origin checks (with
`requests` and the session cookie), sign-out, wrong passwords and the
sign-in throttle, sessions ending with their key or login profile, and
paging through more repositories than one internal batch.

Screenshots of every page at desktop and phone widths go to
/tmp/console-shots/ (never into the repository).
"""

import json
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, Berth
from test_scanning import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    RECORDS,
    debian_image_layers,
    gz_layer,
    push_image,
    sha256,
    tar_of,
    upload_blob,
    wait_scan,
    write_records,
)

SHOTS = Path("/tmp/console-shots")
PASSWORD = "correct horse battery staple"
SBOM_TYPE = "application/spdx+json"
DESKTOP = (1366, 900)
PHONE = (390, 844)


# ---- fixtures ----------------------------------------------------------------


def login_profile(server, user, password, command="create-login-profile"):
    out = subprocess.run(
        [server.bin, "iam", *server.store_args, command, "--account-id", ACCOUNT, "--user-name", user, "--password-stdin"],
        input=password + "\n",
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out


def make_user(server, policy, password=PASSWORD):
    name = f"user-{uuid.uuid4().hex[:8]}"
    server.iam("create-user", "--account-id", ACCOUNT, "--user-name", name)
    if policy is not None:
        server.iam(
            "put-user-policy", "--account-id", ACCOUNT, "--user-name", name,
            "--policy-name", "inline", "--policy-document", json.dumps(policy),
        )
    out = login_profile(server, name, password)
    assert out.returncode == 0, out.stderr
    return name


def repo_arn(name):
    return f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{name}"


class World:
    """The module's server and what was pushed to it."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    server = Berth(tmp)
    try:
        out = server.cli("vulndb", "import", str(write_records(tmp, RECORDS)))
        assert out["imported"] == len(RECORDS)
        ecr = server.client()
        w = World()
        w.server, w.ecr = server, ecr
        ecr.create_repository(repositoryName="alpha", imageScanningConfiguration={"scanOnPush": True})
        ecr.create_repository(repositoryName="beta-secret")
        ecr.create_repository(repositoryName="team/gamma", imageTagMutability="IMMUTABLE")
        # A Debian-like image, scanned on push: CRITICAL (bsdutils, mount) and LOW (libsystemd0).
        w.v1 = push_image(ecr, "alpha", debian_image_layers(), tag="v1")
        wait_scan(ecr, "alpha", w.v1)
        w.v2 = push_image(ecr, "alpha", debian_image_layers({"app/main.py": b"print(1)\n"}), tag="v2")
        wait_scan(ecr, "alpha", w.v2)
        # An index of two platforms.
        children = []
        for arch in ("amd64", "arm64"):
            layers = debian_image_layers({f"arch/{arch}": arch.encode()})
            d = push_image(ecr, "alpha", layers, platform={"architecture": arch})
            m = ecr.batch_get_image(repositoryName="alpha", imageIds=[{"imageDigest": d}])["images"][0]["imageManifest"]
            children.append({"mediaType": OCI_MANIFEST, "digest": d, "size": len(m.encode()),
                             "platform": {"os": "linux", "architecture": arch}})
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
        w.index = ecr.put_image(repositoryName="alpha", imageManifest=index, imageManifestMediaType=OCI_INDEX,
                                imageTag="multi")["image"]["imageId"]["imageDigest"]
        wait_scan(ecr, "alpha", w.index)
        # An SBOM that refers to v1.
        v1_manifest = ecr.batch_get_image(repositoryName="alpha", imageIds=[{"imageDigest": w.v1}])["images"][0]["imageManifest"]
        empty, sbom = b"{}", b'{"spdxVersion": "SPDX-2.3"}'
        upload_blob(ecr, "alpha", empty)
        upload_blob(ecr, "alpha", sbom)
        ref = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
            "layers": [{"mediaType": SBOM_TYPE, "digest": sha256(sbom), "size": len(sbom)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": w.v1, "size": len(v1_manifest.encode())},
            "annotations": {"org.opencontainers.image.created": "2026-01-02T03:04:05Z"},
        })
        w.sbom = ecr.put_image(repositoryName="alpha", imageManifest=ref,
                               imageManifestMediaType=OCI_MANIFEST)["image"]["imageId"]["imageDigest"]
        push_image(ecr, "beta-secret", debian_image_layers(), tag="hidden-tag")
        # The lifecycle test's repository: two small tagged images.
        ecr.create_repository(repositoryName="lc-demo")
        w.lc = [push_image(ecr, "lc-demo", [gz_layer(tar_of({"f": t.encode()}))], tag=t) for t in ("v1", "v2")]
        ecr.set_repository_policy(repositoryName="team/gamma", policyText=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "pull", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                           "Action": ["ecr:BatchGetImage"]}],
        }))
        ecr.put_registry_policy(policyText=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "replicate", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                           "Action": ["ecr:ReplicateImage", "ecr:CreateRepository"],
                           "Resource": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/*"}],
        }))
        ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[
            {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "team/*", "filterType": "WILDCARD"}]}
        ])
        # Replication to another account of this deployment, which has no
        # policy letting us in: the entries stay undelivered (lag, failures).
        server.iam("create-account", "--account-id", "222222222222", "--name", "other")
        ecr.put_replication_configuration(replicationConfiguration={"rules": [
            {"destinations": [{"region": "us-east-1", "registryId": "222222222222"}],
             "repositoryFilters": [{"filter": "team", "filterType": "PREFIX_MATCH"}]}
        ]})
        push_image(ecr, "team/gamma", debian_image_layers({"g": b"1"}), tag="1.0")
        w.admin = make_user(server, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
        ]})
        w.alice = make_user(server, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecr:*", "Resource": repo_arn("alpha")},
        ]})
        yield w
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver():
    SHOTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    d.set_window_size(*DESKTOP)
    d.implicitly_wait(0)
    try:
        yield d
    finally:
        d.quit()


# ---- helpers -----------------------------------------------------------------


def shoot(driver, name):
    """Screenshots of the page at desktop and phone widths, each of the
    whole page (the viewport emulated at the page's full height)."""
    for label, (w, h), mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
        metrics = {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        metrics["height"] = min(max(h, height), 8000)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def sign_in_browser(driver, berth, user=None, password=PASSWORD, key=None, secret=None, next_path=None):
    driver.delete_all_cookies()
    url = berth.endpoint + "/console/sign-in"
    if next_path:
        url += "?next=" + requests.utils.quote(next_path, safe="")
    driver.get(url)
    if key:
        driver.find_element(By.ID, "key_id").send_keys(key)
        driver.find_element(By.ID, "secret").send_keys(secret)
        navigate(driver, driver.find_element(By.ID, "secret").submit)
    else:
        driver.find_element(By.ID, "user").send_keys(user)
        driver.find_element(By.ID, "password").send_keys(password)
        navigate(driver, driver.find_element(By.ID, "password").submit)


def navigate(driver, act):
    """Do `act` (a click or a submit) and wait for the next page to load."""
    old = driver.find_element(By.TAG_NAME, "html")
    act()

    def gone(_):
        try:
            old.is_enabled()
            return False
        except WebDriverException:  # stale, or "does not belong to the document"
            return True

    WebDriverWait(driver, 15).until(gone)
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def h1(driver):
    return driver.find_element(By.TAG_NAME, "h1").text


def table_texts(driver, caption_part):
    """The rows (cell texts) of the table whose caption contains `caption_part`."""
    for t in driver.find_elements(By.TAG_NAME, "table"):
        if caption_part in t.find_element(By.TAG_NAME, "caption").text:
            return [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in t.find_elements(By.CSS_SELECTOR, "tbody tr")]
    raise AssertionError(f"no table {caption_part!r} on {driver.current_url}")


def signin_form_fields(text):
    return dict(re.findall(r'name="(csrf|next)" value="([^"]*)"', text))


def requests_session(berth, user=None, password=PASSWORD, key=None, secret=None):
    """A `requests` session signed in through the sign-in form (its cookie
    and CSRF token, as a browser would)."""
    s = requests.Session()
    r = s.get(berth.endpoint + "/console/sign-in", timeout=10)
    assert r.status_code == 200
    fields = signin_form_fields(r.text)
    data = {"csrf": fields["csrf"], "next": "/console/"}
    if key:
        data.update(mode="key", key_id=key, secret=secret)
    else:
        data.update(mode="password", user=user, password=password)
    r = s.post(berth.endpoint + "/console/sign-in", data=data, allow_redirects=False, timeout=30)
    assert r.status_code == 303, (r.status_code, r.text[:500])
    assert "berth_session" in s.cookies
    return s


def page_csrf(s, berth, path):
    r = s.get(berth.endpoint + path, timeout=10)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    m = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert m, r.text[:500]
    return m.group(1)


# ---- tests -------------------------------------------------------------------


def test_a_browser_at_the_root_goes_to_the_console_and_api_clients_are_unaffected(world):
    base = world.server.endpoint
    r = requests.get(base + "/", headers={"Accept": "text/html,application/xhtml+xml"}, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"] == "/console/"
    r = requests.get(base + "/", allow_redirects=False, timeout=10)
    assert r.status_code == 405 and r.content == b""
    r = requests.get(base + "/", headers={"Accept": "application/json"}, allow_redirects=False, timeout=10)
    assert r.status_code == 405
    # The API on POST / is what it was.
    names = [x["repositoryName"] for x in world.ecr.describe_repositories()["repositories"]]
    assert "alpha" in names
    # Not signed in: every page sends to the sign-in page, and back after.
    r = requests.get(base + "/console/repository?name=alpha", allow_redirects=False, timeout=10)
    assert r.status_code == 303
    assert r.headers["Location"] == "/console/sign-in?next=%2Fconsole%2Frepository%3Fname%3Dalpha"
    r = requests.get(base + "/console/sign-in", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    for h in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"):
        assert h in r.headers, h
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]


def test_password_sign_in_and_browsing_repositories_a_repository_and_an_image(world, driver):
    berth = world.server
    driver.delete_all_cookies()
    driver.get(berth.endpoint + "/console/sign-in")
    shoot(driver, "01-sign-in")
    sign_in_browser(driver, berth, user=world.admin)
    assert h1(driver) == "Repositories"
    names = [r[0] for r in table_texts(driver, "Repositories")]
    assert names == ["alpha", "beta-secret", "lc-demo", "team/gamma"]
    shoot(driver, "02-repositories")
    # Search and sort.
    driver.get(berth.endpoint + "/console/?q=GAM&sort=-name")
    assert [r[0] for r in table_texts(driver, "contains")] == ["team/gamma"]
    driver.get(berth.endpoint + "/console/?sort=-name")
    assert [r[0] for r in table_texts(driver, "Repositories")] == ["team/gamma", "lc-demo", "beta-secret", "alpha"]
    # Into a repository.
    driver.get(berth.endpoint + "/console/")
    navigate(driver, driver.find_element(By.LINK_TEXT, "alpha").click)
    assert h1(driver) == "alpha"
    rows = table_texts(driver, "Images")
    by_tag = {r[0]: r for r in rows}
    assert "v1" in by_tag and "v2" in by_tag and "multi" in by_tag
    v1 = by_tag["v1"]
    assert v1[1].startswith("sha256:" + world.v1.split(":")[1][:12])
    assert "KiB" in v1[2] or " B" in v1[2]
    assert "UTC" in v1[3]  # pushed at
    assert "UTC" in v1[4]  # pulled (by the fixture's BatchGetImage)
    assert "C 2" in v1[5] and "L 1" in v1[5], v1  # CRITICAL 2, LOW 1
    pull = driver.find_element(By.ID, "pull-cmd").text
    assert pull.startswith(f"docker pull {berth.addr}/alpha:")
    assert driver.find_element(By.CSS_SELECTOR, "button[data-copy]").get_attribute("data-copy") == pull
    assert "Storage used over time" in driver.page_source
    shoot(driver, "03-repository-images")
    # Lookup by tag.
    driver.get(berth.endpoint + "/console/repository?name=alpha&find=v2")
    assert [r[0] for r in table_texts(driver, "Images")] == ["v2"]
    # Settings and policy views.
    driver.get(berth.endpoint + "/console/repository?name=team%2Fgamma&view=settings")
    assert "IMMUTABLE" in driver.page_source and "AES256" in driver.page_source
    shoot(driver, "04-repository-settings")
    driver.get(berth.endpoint + "/console/repository?name=team%2Fgamma&view=policy")
    assert '"ecr:BatchGetImage"' in driver.find_element(By.CSS_SELECTOR, "pre.json").text
    shoot(driver, "05-repository-policy")
    # An image: layers, findings with filters, referrers, manifest.
    driver.get(berth.endpoint + "/console/repository?name=alpha&find=v1")
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "td a[href*='/console/image']").click)
    assert h1(driver).startswith("alpha@")
    layers = table_texts(driver, "Layers")
    assert len(layers) == 2 and all(r[1].startswith("sha256:") for r in layers)
    findings = table_texts(driver, "Findings")
    got = {(r[0], r[1], r[2]) for r in findings}
    assert got == {("CVE-2026-0001", "CRITICAL", "bsdutils"), ("CVE-2026-0001", "CRITICAL", "mount"),
                   ("CVE-2026-0002", "LOW", "libsystemd0")}, got
    assert "Findings by severity" in driver.page_source
    refs = table_texts(driver, "refer to this image")
    assert refs and refs[0][0] == SBOM_TYPE and refs[0][3] == "2026-01-02T03:04:05Z"
    assert '"schemaVersion": 2' in driver.find_element(By.CSS_SELECTOR, "pre.json").text
    shoot(driver, "06-image")
    # Filters: by severity, by package.
    driver.find_element(By.CSS_SELECTOR, "#severity option[value='']")
    Select(driver.find_element(By.ID, "severity")).select_by_visible_text("LOW")
    navigate(driver, driver.find_element(By.ID, "package").submit)
    assert {r[2] for r in table_texts(driver, "Findings")} == {"libsystemd0"}
    driver.get(berth.endpoint + f"/console/image?name=alpha&digest={world.v1}&package=MOUNT")
    assert {r[2] for r in table_texts(driver, "Findings")} == {"mount"}
    # An index: its platforms, each a link to its image.
    driver.get(berth.endpoint + f"/console/image?name=alpha&digest={world.index}")
    platforms = table_texts(driver, "Platforms")
    assert [p[0] for p in platforms] == ["linux/amd64", "linux/arm64"]
    # An index's scan is its platforms' findings merged.
    assert {r[2] for r in table_texts(driver, "Findings")} == {"bsdutils", "mount", "libsystemd0"}
    shoot(driver, "07-image-index")
    navigate(driver, driver.find_element(By.LINK_TEXT, platforms[1][1]).click)
    assert h1(driver).startswith("alpha@")
    assert table_texts(driver, "Layers")


def test_access_key_sign_in_and_the_registry_page(world, driver):
    berth = world.server
    sign_in_browser(driver, berth, key=ROOT_KEY_ID, secret=ROOT_SECRET)
    assert h1(driver) == "Repositories"
    assert "root" in driver.find_element(By.CSS_SELECTOR, ".who").text
    navigate(driver, driver.find_element(By.LINK_TEXT, "Registry").click)
    assert h1(driver) == "Registry"
    src = driver.page_source
    assert '"ecr:ReplicateImage"' in driver.find_elements(By.CSS_SELECTOR, "pre.json")[-1].text
    assert "SCAN_ON_PUSH" in src and "team/*" in src
    rules = table_texts(driver, "Replication rules")
    assert rules == [["1", "222222222222 in us-east-1", "team*"]]
    backlog = table_texts(driver, "Replication backlog")
    assert backlog[0][:2] == ["us-east-1", "222222222222"]
    assert "Replication lag per destination" in src
    shoot(driver, "08-registry")


def test_the_lifecycle_editor_saves_and_shows_the_preview(world, driver):
    """Preview first, then save: a stored policy is executed by the server
    at its next lifecycle check, so nothing here waits after the save."""
    berth, ecr = world.server, world.ecr
    sign_in_browser(driver, berth, user=world.admin)
    driver.get(berth.endpoint + "/console/repository?name=lc-demo&view=lifecycle")
    area = driver.find_element(By.ID, "policy")
    assert "Expire untagged images" in area.get_attribute("value")  # the example
    assert "No preview yet" in driver.page_source
    # Refused as written: the error is shown, the text kept, nothing stored.
    area.clear()
    area.send_keys('{"rules": [{"rulePriority": 0}]}')
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "button[value='lifecycle-save']").click)
    assert "InvalidParameterException" in driver.find_element(By.CSS_SELECTOR, ".notice.error").text
    assert driver.find_element(By.ID, "policy").get_attribute("value") == '{"rules": [{"rulePriority": 0}]}'
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName="lc-demo")
    # Keep one image tagged v*: the older of v1 and v2 would expire.
    policy = {"rules": [{"rulePriority": 1, "description": "keep the newest v tag",
                         "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1},
                         "action": {"type": "expire"}}]}
    area = driver.find_element(By.ID, "policy")
    area.clear()
    area.send_keys(json.dumps(policy, indent=2))
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "button[value='lifecycle-preview']").click)
    # The page reloads until the preview is complete.
    try:
        WebDriverWait(driver, 30, poll_frequency=0.5,
                      ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
            lambda d: "COMPLETE" in d.find_element(By.CSS_SELECTOR, "#preview + dl").text
        )
    except Exception:
        shoot(driver, "debug-lifecycle")
        raise
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    rows = table_texts(driver, "would expire")
    assert [(r[0], r[3], r[4]) for r in rows] == [("v1", "EXPIRE", "1")], rows
    assert rows[0][1].startswith("sha256:" + world.lc[0].split(":")[1][:12])
    # A preview stores nothing and expires nothing.
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName="lc-demo")
    assert ecr.describe_images(repositoryName="lc-demo", imageIds=[{"imageTag": "v1"}])["imageDetails"]
    # The editor still holds the previewed text: save it.
    assert json.loads(driver.find_element(By.ID, "policy").get_attribute("value")) == policy
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "button[value='lifecycle-save']").click)
    assert "Lifecycle policy saved." in driver.page_source
    stored = json.loads(ecr.get_lifecycle_policy(repositoryName="lc-demo")["lifecyclePolicyText"])
    assert stored == policy
    shoot(driver, "09-repository-lifecycle")


def test_a_user_allowed_one_repository_sees_nothing_of_another(world, driver):
    berth = world.server
    sign_in_browser(driver, berth, user=world.alice)
    assert [r[0] for r in table_texts(driver, "Repositories")] == ["alpha"]
    assert "beta" not in driver.page_source and "gamma" not in driver.page_source
    driver.get(berth.endpoint + "/console/?q=beta")
    assert table_texts(driver, "contains") == [["Nothing to show."]]
    # Direct URLs: not authorized, whether the repository exists or not.
    for path in ("/console/repository?name=beta-secret", "/console/repository?name=beta-secret&view=lifecycle",
                 "/console/repository?name=no-such-repo", "/console/image?name=beta-secret&digest=" + world.v1):
        driver.get(berth.endpoint + path)
        assert h1(driver) == "Not authorized", path
        assert "hidden-tag" not in driver.page_source
        assert "does not exist" not in driver.page_source
    shoot(driver, "10-not-authorized")
    # The registry page: each section says what it may not show.
    driver.get(berth.endpoint + "/console/registry")
    assert driver.page_source.count("Not authorized to see this") == 4
    assert "222222222222" not in driver.page_source
    # Its own repository works.
    driver.get(berth.endpoint + "/console/repository?name=alpha")
    assert {r[0] for r in table_texts(driver, "Images")} >= {"v1", "v2"}
    # The same refusal, status and all, without a browser.
    s = requests_session(berth, user=world.alice)
    r = s.get(berth.endpoint + "/console/repository?name=beta-secret", timeout=10)
    assert r.status_code == 403 and "not authorized to perform: ecr:DescribeRepositories" in r.text


def test_posts_without_the_sessions_csrf_token_are_refused_and_change_nothing(world):
    berth, ecr = world.server, world.ecr
    ecr.create_repository(repositoryName="csrf-target")
    s = requests_session(berth, user=world.admin)
    csrf = page_csrf(s, berth, "/console/repository?name=csrf-target&view=settings")
    url = berth.endpoint + "/console/repository"
    form = {"name": "csrf-target", "action": "settings", "mutability": "IMMUTABLE", "scan_on_push": "on"}

    def unchanged():
        r = ecr.describe_repositories(repositoryNames=["csrf-target"])["repositories"][0]
        return r["imageTagMutability"] == "MUTABLE" and not r["imageScanningConfiguration"]["scanOnPush"]

    for label, data, headers in [
        ("no token", form, {}),
        ("empty token", {**form, "csrf": ""}, {}),
        ("wrong token", {**form, "csrf": csrf[:-2] + ("AA" if not csrf.endswith("AA") else "BB")}, {}),
        ("another session's token", {**form, "csrf": page_csrf(requests_session(berth, user=world.admin), berth, "/console/")}, {}),
        ("another origin", {**form, "csrf": csrf}, {"Origin": "http://evil.example"}),
    ]:
        r = s.post(url, data=data, headers=headers, allow_redirects=False, timeout=10)
        assert r.status_code == 403, (label, r.status_code)
        assert unchanged(), label
    # Lifecycle saves likewise.
    r = s.post(url, data={"name": "csrf-target", "action": "lifecycle-save", "policy": '{"rules": []}'}, allow_redirects=False, timeout=10)
    assert r.status_code == 403
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName="csrf-target")
    # The control: the same form with the token (and this origin) changes it.
    r = s.post(url, data={**form, "csrf": csrf}, headers={"Origin": berth.endpoint}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text[:300]
    assert not unchanged()
    # Sign-in itself: without the form's cookie, or from another origin, refused.
    fresh = requests.Session()
    fields = signin_form_fields(fresh.get(berth.endpoint + "/console/sign-in", timeout=10).text)
    data = {"mode": "password", "user": world.admin, "password": PASSWORD, "csrf": fields["csrf"]}
    r = requests.post(berth.endpoint + "/console/sign-in", data=data, allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "berth_session" not in r.headers.get("Set-Cookie", "")
    r = fresh.post(berth.endpoint + "/console/sign-in", data=data, headers={"Origin": "http://evil.example"},
                   allow_redirects=False, timeout=10)
    assert r.status_code == 403
    # A body over the form limit is refused unread.
    r = s.post(url, data={"csrf": csrf, "name": "csrf-target", "action": "lifecycle-save", "policy": "x" * 400_000},
               allow_redirects=False, timeout=10)
    assert r.status_code == 400


def test_sign_out_ends_the_session_everywhere(world, driver):
    berth = world.server
    s = requests_session(berth, user=world.admin)
    cookie = s.cookies["berth_session"]
    csrf = page_csrf(s, berth, "/console/")
    r = s.post(berth.endpoint + "/console/sign-out", data={"csrf": csrf}, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"] == "/console/sign-in"
    assert "Max-Age=0" in r.headers["Set-Cookie"]
    # The old cookie, replayed, opens nothing.
    r = requests.get(berth.endpoint + "/console/", cookies={"berth_session": cookie}, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"].startswith("/console/sign-in")
    # In the browser: the button signs out.
    sign_in_browser(driver, berth, user=world.admin)
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form.signout button").click)
    assert h1(driver) == "Sign in"
    driver.get(berth.endpoint + "/console/registry")
    assert h1(driver) == "Sign in"


def test_wrong_passwords_are_refused_and_throttled(world, driver):
    berth = world.server
    user = make_user(berth, None, password="the right password")
    sign_in_browser(driver, berth, user=user, password="the wrong password")
    assert h1(driver) == "Sign in"
    assert "incorrect" in driver.find_element(By.CSS_SELECTOR, ".notice.error").text
    shoot(driver, "11-sign-in-refused")
    s = requests.Session()

    def attempt(password, user=user):
        fields = signin_form_fields(s.get(berth.endpoint + "/console/sign-in", timeout=10).text)
        data = {"mode": "password", "user": user, "password": password, "csrf": fields["csrf"]}
        return s.post(berth.endpoint + "/console/sign-in", data=data, allow_redirects=False, timeout=30)

    # An unknown user and a wrong password read the same.
    a, b = attempt("whatever", user="no-such-user"), attempt("the wrong password")
    assert a.status_code == b.status_code == 401
    assert "berth_session" not in s.cookies
    # Five failures for the user (the browser's included): then even the right password waits.
    for _ in range(3):
        assert attempt("the wrong password").status_code == 401
    r = attempt("the right password")
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    # Another user from the same address is not locked out by it.
    assert attempt(PASSWORD, user=world.admin).status_code == 303


def test_sessions_end_with_their_key_or_login_profile(world):
    berth = world.server
    name, _, key_id, secret = berth.user_key({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:DescribeRepositories", "Resource": "*"}]})
    s = requests_session(berth, key=key_id, secret=secret)
    assert s.get(berth.endpoint + "/console/", allow_redirects=False, timeout=10).status_code == 200
    berth.iam("deactivate-access-key", "--access-key-id", key_id)
    deadline = time.monotonic() + 15
    while s.get(berth.endpoint + "/console/", allow_redirects=False, timeout=10).status_code == 200:
        assert time.monotonic() < deadline, "the session outlived its key"
        time.sleep(0.5)
    assert s.get(berth.endpoint + "/console/", allow_redirects=False, timeout=10).status_code == 303
    # A password session ends when the login profile is deleted (at once:
    # the sessions go in the same transaction) or the password changes.
    user = make_user(berth, None)
    s = requests_session(berth, user=user)
    assert s.get(berth.endpoint + "/console/", allow_redirects=False, timeout=10).status_code == 200
    out = login_profile(berth, user, "a new password!", command="update-login-profile")
    assert out.returncode == 0, out.stderr
    assert s.get(berth.endpoint + "/console/", allow_redirects=False, timeout=10).status_code == 303
    s = requests_session(berth, user=user, password="a new password!")
    berth.iam("delete-login-profile", "--account-id", ACCOUNT, "--user-name", user)
    assert s.get(berth.endpoint + "/console/", allow_redirects=False, timeout=10).status_code == 303
    # The CLI's own refusals.
    assert login_profile(berth, user, "short").returncode != 0
    assert login_profile(berth, "no-such-user", PASSWORD).returncode != 0
    assert login_profile(berth, user, PASSWORD).returncode == 0
    assert login_profile(berth, user, PASSWORD).returncode != 0  # already has one
    gone = subprocess.run([berth.bin, "iam", *berth.store_args, "delete-user", "--account-id", ACCOUNT, "--user-name", user],
                          env=berth.env, capture_output=True, text=True, timeout=60)
    assert gone.returncode != 0 and "login profile" in gone.stderr


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A server with more repositories than one internal batch (1,000)."""
    server = Berth(tmp_path_factory.mktemp("many"))
    try:
        ecr = server.client()
        names = [f"svc-{i:04d}" for i in range(1100)]

        def create(chunk):
            c = server.client()
            for n in chunk:
                c.create_repository(repositoryName=n)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, [names[i::8] for i in range(8)]))
        ecr.create_repository(repositoryName="zz-only-mine")
        server.names = sorted(names + ["zz-only-mine"])
        server.limited = make_user(server, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecr:*", "Resource": repo_arn("zz-only-mine")}]})
        server.admin = make_user(server, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]})
        yield server
    finally:
        server.stop()


def walk(s, berth, query):
    """Every repository name, following "Next page" links; and the slowest page."""
    names, url, slowest = [], berth.endpoint + "/console/?" + query, 0.0
    while url:
        t = time.monotonic()
        r = s.get(url, timeout=30)
        slowest = max(slowest, time.monotonic() - t)
        assert r.status_code == 200, r.text[:300]
        names += re.findall(r'<td data-label="Name"><a href="[^"]*">([^<]+)</a>', r.text)
        m = re.search(r'<a class="button" rel="next" href="([^"]+)"', r.text)
        url = berth.endpoint + m.group(1).replace("&amp;", "&") if m else None
    return names, slowest


def test_paging_through_many_repositories(many):
    s = requests_session(many, user=many.admin)
    names, slowest = walk(s, many, "n=100")
    assert names == many.names
    assert slowest < 5, slowest
    names, _ = walk(s, many, "n=100&sort=-name&q=svc-10")
    assert names == sorted([n for n in many.names if "svc-10" in n], reverse=True)
    names, _ = walk(s, many, "n=100&sort=created")
    assert sorted(names) == many.names and len(set(names)) == len(names)
    # A page token is bound to its query: another sort's token is refused.
    r = s.get(many.endpoint + "/console/?n=100", timeout=30)
    token = re.search(r'after=([^"&]+)', r.text).group(1)
    r = s.get(many.endpoint + f"/console/?n=100&sort=-name&after={token}", timeout=30)
    assert r.status_code == 400
    # A caller who may see one repository of 1,101 gets just that one.
    s = requests_session(many, user=many.limited)
    names, slowest = walk(s, many, "")
    assert names == ["zz-only-mine"]
    assert slowest < 10, slowest
    # Bounded inputs.
    assert s.get(many.endpoint + "/console/?q=" + "a" * 300, timeout=10).status_code == 400
    assert s.get(many.endpoint + "/console/?n=100000", timeout=10).status_code == 400
    assert s.get(many.endpoint + "/console/?x=" + "a" * 5000, timeout=10).status_code == 400


def test_the_audit_log_page_filters_pages_and_records_the_console(world, driver):
    berth = world.server
    # The console's calls are the caller's own, from its address and browser.
    s = requests_session(berth, user=world.admin)
    r = s.get(berth.endpoint + "/console/repository?name=team%2Fgamma&view=settings", headers={"User-Agent": "probe/1.0"}, timeout=10)
    assert r.status_code == 200
    # A user whose policies allow ECR but not CloudTrail may not read the log.
    r = s.get(berth.endpoint + "/console/audit", timeout=10)
    assert r.status_code == 403 and "cloudtrail:LookupEvents" in r.text
    # The root may: by access key, in the browser.
    sign_in_browser(driver, berth, key=ROOT_KEY_ID, secret=ROOT_SECRET)
    navigate(driver, driver.find_element(By.LINK_TEXT, "Audit log").click)
    assert h1(driver) == "Audit log"
    rows = table_texts(driver, "Events")
    assert len(rows) == 50, len(rows)
    assert rows[0][1].split("\n")[0] in ("ConsoleLogin", "LookupEvents", "DescribeRepositories"), rows[0]
    shoot(driver, "12-audit")
    # Filter by user name: the admin's console calls, newest first.
    driver.get(berth.endpoint + f"/console/audit?attr=Username&value={world.admin}")
    rows = table_texts(driver, "Events")
    names = [r[1].split("\n")[0] for r in rows]
    assert "ConsoleLogin" in names and "DescribeRepositories" in names and "LookupEvents" in names, names
    times = [r[0] for r in rows]
    assert times == sorted(times, reverse=True)
    lookup = next(r for r in rows if r[1].startswith("LookupEvents"))  # the refused one
    assert lookup[4] == "127.0.0.1" and lookup[6] == "AccessDenied", lookup
    # Filter by event name: failed sign-ins hide the name that was typed.
    driver.get(berth.endpoint + "/console/audit?attr=EventName&value=ConsoleLogin")
    records = [json.loads(e.get_attribute("textContent")) for e in driver.find_elements(By.CSS_SELECTOR, "td details pre")]
    assert records and all(r["eventSource"] == "signin.amazonaws.com" for r in records)
    outcomes = {r["responseElements"]["ConsoleLogin"] for r in records}
    assert outcomes == {"Success", "Failure"}, outcomes
    for r in records:
        if r["responseElements"]["ConsoleLogin"] == "Failure":
            assert r["userIdentity"]["userName"] == "HIDDEN_DUE_TO_SECURITY_REASONS"
            assert "the wrong password" not in json.dumps(r)
    # Paging: the next page continues where this one stopped.
    def event_ids():
        return [json.loads(e.get_attribute("textContent"))["eventID"]
                for e in driver.find_elements(By.CSS_SELECTOR, "td details pre")]

    driver.get(berth.endpoint + "/console/audit")
    first = event_ids()
    navigate(driver, driver.find_element(By.LINK_TEXT, "Older events").click)
    second = event_ids()
    assert len(first) == 50 and second and not set(first) & set(second)
    # A date range with nothing in it.
    driver.get(berth.endpoint + "/console/audit?from=2001-01-01&to=2001-01-02")
    assert table_texts(driver, "Events") == [["Nothing to show."]]
    assert requests_session(berth, key=ROOT_KEY_ID, secret=ROOT_SECRET).get(
        berth.endpoint + "/console/audit?from=2002-01-02&to=2002-01-01", timeout=10).status_code == 400
    # The same events through CloudTrail's API: the console's DescribeRepositories
    # carries the browser's address and agent, no invokedBy.
    ct = berth.client(service="cloudtrail")
    events = ct.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": world.admin}])["Events"]
    described = [json.loads(e["CloudTrailEvent"]) for e in events if e["EventName"] == "DescribeRepositories"]
    probe = [d for d in described if "probe/1.0" in (d.get("userAgent") or "")]
    assert probe, described[:2]
    assert probe[0]["sourceIPAddress"] == "127.0.0.1"
    assert probe[0]["userAgent"].startswith("berth-console")
    assert "invokedBy" not in probe[0]["userIdentity"]
    assert probe[0]["userIdentity"]["accessKeyId"].startswith("ASIA")
