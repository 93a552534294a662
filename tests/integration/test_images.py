"""What is in the images `make tools` built (.tools/images, read as OCI
archives, layers and whiteouts applied): each runs as a user that is not
root, none holds a compiler or build tools, and none keeps the build
machine's pip settings or a CA certificate the machine added to its own
trust (the build containers saw both)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from tests.support.oci import ImageRoot, read_image
from tests.support.pki import CertificateAuthority
from tests.support.realnode import IMAGE_ARCHIVES, IMAGES

# Every image the real node runs, and the base the Python ones are built on.
ARCHIVES = sorted({*IMAGE_ARCHIVES, "debian-python"})
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
# Where Debian's ca-certificates takes a machine's own CAs from.
MACHINE_CAS = Path("/usr/local/share/ca-certificates")
BUILD_TOOLS = re.compile(
    r"^usr/(local/)?bin/(gcc|g\+\+|cc|c\+\+|clang|ld|as|make|cmake|go|rustc|cargo)(-[\d.]+)?$"
    r"|^usr/bin/[\w.-]+-(gcc|g\+\+|cc)(-[\d.]+)?$|^usr/(lib|libexec)/gcc/"
)
PIP_SETTINGS = ("etc/pip.conf", "etc/xdg/pip/pip.conf", "root/.config/pip/pip.conf")


def _der_of_pem(text: str) -> list[bytes]:
    """The certificates of a PEM text, as DER."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    return [base64.b64decode("".join(block.split())) for block in blocks]


def machine_cas() -> list[bytes]:
    return [der for ca in sorted(MACHINE_CAS.glob("*.crt")) for der in _der_of_pem(ca.read_text())]


def leaked_cas(bundle: bytes, cas: list[bytes]) -> list[str]:
    """Which of ``cas`` (DER) the PEM ``bundle`` trusts: their first bytes, in hex."""
    trusted = set(_der_of_pem(bundle.decode()))
    return [der[:16].hex() for der in cas if der in trusted]


@pytest.fixture(scope="module", params=ARCHIVES)
def image(request: pytest.FixtureRequest) -> ImageRoot:
    archive = IMAGES / f"{request.param}.tar"
    assert archive.exists(), f"{archive} is missing: `make tools` builds it (build-images.sh)"
    return read_image(archive, wanted=lambda path: path == CA_BUNDLE)


def test_the_image_runs_as_a_user_that_is_not_root(image: ImageRoot) -> None:
    user = image.config["config"].get("User", "")
    if image.reference.endswith("/debian-python:bookworm"):
        assert user == ""  # the base: each image built on it names its user
        return
    assert user, image.reference
    assert user.split(":")[0] not in {"0", "root"}, (image.reference, user)


def test_no_compiler_or_build_tool_is_in_the_image(image: ImageRoot) -> None:
    found = sorted(p for p in image.paths if BUILD_TOOLS.search(p))
    assert found == [], (image.reference, found[:20])


def test_the_build_machines_pip_settings_and_own_cas_stay_out(image: ImageRoot) -> None:
    assert [p for p in PIP_SETTINGS if p in image.paths] == [], image.reference
    bundle = image.contents.get(CA_BUNDLE)
    if bundle is None:
        return  # static Go programs: no bundle at all
    assert _der_of_pem(bundle.decode()), f"{image.reference}: {CA_BUNDLE} holds no certificate"
    assert leaked_cas(bundle, machine_cas()) == [], image.reference


def test_a_bundle_that_trusts_a_machine_ca_is_found_out(tmp_path: Path) -> None:
    """The check above on a bundle a build let the machine's CA into (here a
    CA made for the test, in the middle of this machine's real bundle)."""
    own = CertificateAuthority(tmp_path / "ca", name="a machine's own CA")
    host = Path("/" + CA_BUNDLE).read_text()
    [der] = _der_of_pem(own.cert_path.read_text())
    middle = host.index("-----BEGIN CERTIFICATE-----", len(host) // 2)
    bundle = host[:middle] + own.cert_path.read_text() + host[middle:]
    assert leaked_cas(bundle.encode(), [der]) == [der[:16].hex()]
    assert leaked_cas(host.encode(), [der]) == []


@pytest.mark.parametrize(
    ("path", "is_build_tool"),
    [
        ("usr/bin/gcc", True),
        ("usr/bin/gcc-12", True),
        ("usr/bin/x86_64-linux-gnu-gcc-12", True),
        ("usr/lib/gcc/x86_64-linux-gnu/12/cc1", True),
        ("usr/bin/make", True),
        ("usr/bin/python3.11", False),
        ("opt/modelgate/bin/pip", False),
        ("usr/bin/git", False),
    ],
)
def test_what_counts_as_a_build_tool(path: str, is_build_tool: bool) -> None:
    assert bool(BUILD_TOOLS.search(path)) is is_build_tool
