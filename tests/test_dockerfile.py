"""The Dockerfile, checked statically (no Docker daemon runs here)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_dockerfile_installs_this_package_with_pinned_frameworks_and_runs_alexnet_as_a_user():
    rows = instructions()
    assert rows[0][0] == "FROM" and "cuda" in rows[0][1]
    runs = " ".join(rest for keyword, rest in rows if keyword == "RUN")
    assert "pip install ." in runs
    for pinned in ("torch==", "torchvision==", "lightning==", "nvidia-dali-cuda130=="):
        assert pinned in runs
    users = [rest for keyword, rest in rows if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["alexnet"]') in rows
    volumes = " ".join(rest for keyword, rest in rows if keyword == "VOLUME")
    assert "/data" in volumes and "/runs" in volumes
    assert (ROOT / ".dockerignore").is_file() and ".venv" in (ROOT / ".dockerignore").read_text()


def test_the_uid_for_our_user_is_freed_first_on_ubuntu_24_04_images():
    runs = [rest for keyword, rest in instructions() if keyword == "RUN" and "useradd" in rest]
    assert len(runs) == 1 and "--uid 1000" in runs[0]
    assert runs[0].index("userdel --remove ubuntu") < runs[0].index("useradd")


def test_containers_see_the_hardware_jpeg_decoder():
    env = " ".join(rest for keyword, rest in instructions() if keyword == "ENV")
    capabilities = env.split("NVIDIA_DRIVER_CAPABILITIES=")[1].split()[0].split(",")
    assert {"compute", "utility", "video"} <= set(capabilities)
