#!/usr/bin/env python3
"""Run the real `moltbot config check` on the configuration each deployment hands moltbot.

    config_check.py MOLTBOT_BIN k8s RENDERED.yaml
    config_check.py MOLTBOT_BIN compose CONFIG.json

For every moltbot container (k8s Deployments and Jobs) or service (compose), rebuild its environment in a
temporary directory — literal values, Secret/ConfigMap references, `…_FILE` secrets as files, the mounted
moltbot.toml — and run `moltbot config check` with exactly that environment. Secret values that are
placeholders (REPLACE-ME) or live outside the manifests are replaced by valid dummies of the right shape
(a 48-byte JWT secret, an `mb_…` bootstrap key), so what is checked is every key name and value the
deployment sets. Exit status 1 when any check fails.
"""
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DUMMY = {
    "MODEL_ENDPOINT": "https://api.example.com/v1",
    "DATABASE_URL": "postgres://moltbot@postgres:5432/moltbot",
    "REDIS_URL": "redis://redis:6379/0",
}


def dummy_secret(name):
    """A valid stand-in for a secret file or value, chosen by its variable or key name."""
    upper = name.upper()
    if "BOOTSTRAP" in upper or "ADMIN_KEY" in upper:
        return "mb_" + secrets.token_hex(32)
    for key, value in DUMMY.items():
        if key in upper:
            return value
    return secrets.token_urlsafe(48)


def run_check(binary, label, env, workdir):
    env = {"PATH": "/usr/bin:/bin", **env}
    r = subprocess.run([binary, "config", "check"], env=env, cwd=workdir, capture_output=True, text=True,
                       timeout=60)
    out = (r.stdout + r.stderr).strip().replace("\n", "\n       ")
    print(f"{'ok  ' if r.returncode == 0 else 'FAIL'} {label}: {out}")
    return r.returncode == 0


def k8s_envs(docs, tmp):
    """(label, env) for each moltbot container of a Deployment or Job."""
    def find(kind, name, ns):
        return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name
                     and d["metadata"].get("namespace") == ns), None)

    for w in docs:
        if w["kind"] not in ("Deployment", "Job"):
            continue
        ns = w["metadata"].get("namespace")
        spec = w["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            if "moltbot" not in c.get("image", ""):
                continue
            root = Path(tempfile.mkdtemp(dir=tmp))
            # Materialise the mounted ConfigMaps and Secrets under root + mountPath.
            paths = {}
            for m in c.get("volumeMounts", []):
                v = vols.get(m["name"], {})
                base = root / m["mountPath"].lstrip("/")
                if "configMap" in v:
                    cm = find("ConfigMap", v["configMap"]["name"], ns) or {"data": {}}
                    for k, text in cm.get("data", {}).items():
                        (base / k).parent.mkdir(parents=True, exist_ok=True)
                        (base / k).write_text(text)
                if "secret" in v:
                    sec = find("Secret", v["secret"]["secretName"], ns) or {}
                    data = sec.get("stringData", {})
                    items = v["secret"].get("items") or [{"key": k, "path": k} for k in data]
                    for it in items:
                        value = data.get(it["key"], "REPLACE-ME")
                        if "REPLACE-ME" in value:
                            value = dummy_secret(it["key"])
                        (base / it["path"]).parent.mkdir(parents=True, exist_ok=True)
                        (base / it["path"]).write_text(value + "\n")
                paths[m["mountPath"]] = base
            env = {}
            for e in c.get("env", []):
                if "value" in e:
                    value = e["value"]
                    if value.startswith("/"):
                        # A path inside a mounted volume: point into the materialised copy.
                        for mount, base in paths.items():
                            if value.startswith(mount.rstrip("/") + "/"):
                                value = str(base / value[len(mount.rstrip("/")) + 1:])
                                break
                    env[e["name"]] = value
                    continue
                vf = e.get("valueFrom", {})
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    sec = find("Secret", r["name"], ns) or {}
                    value = sec.get("stringData", {}).get(r["key"], "REPLACE-ME")
                    env[e["name"]] = dummy_secret(r["key"]) if "REPLACE-ME" in value else value
                elif "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    env[e["name"]] = find("ConfigMap", r["name"], ns)["data"][r["key"]]
            label = f"{w['kind']}/{w['metadata']['name']} container {c['name']}"
            yield label, env, root


def compose_envs(cfg, tmp):
    for name, s in cfg["services"].items():
        if "moltbot" not in s.get("image", ""):
            continue
        root = Path(tempfile.mkdtemp(dir=tmp))
        env = {}
        for var, value in (s.get("environment") or {}).items():
            if value is None:
                continue
            if value.startswith("/run/secrets/"):
                f = root / value.lstrip("/")
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(dummy_secret(f.name) + "\n")
                value = str(f)
            env[var] = value
        yield f"compose service {name}", env, root


def main(argv):
    if len(argv) != 4 or argv[2] not in ("k8s", "compose"):
        print(__doc__, file=sys.stderr)
        return 2
    binary, mode, path = os.path.abspath(argv[1]), argv[2], argv[3]
    ok = True
    with tempfile.TemporaryDirectory() as tmp, open(path) as f:
        if mode == "k8s":
            items = list(k8s_envs([d for d in yaml.safe_load_all(f) if d], tmp))
        else:
            items = list(compose_envs(json.load(f), tmp))
        if not items:
            print(f"FAIL {path}: no moltbot container found")
            return 1
        for label, env, root in items:
            ok &= run_check(binary, f"{path}: {label}", env, root)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
