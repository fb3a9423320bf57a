#!/usr/bin/env python3
"""A fake `kubectl` for tests/deploy/switch_test.sh: answers exactly the calls switch.sh makes, from and to
the JSON state file $FAKE_KUBECTL_STATE. Anything else exits 2, so a new kubectl call in switch.sh must be
taught here (and so is tested).

The Service is real: its rendered manifest (state "service_file") is read and patched by the real kubectl
($REAL_KUBECTL, offline: `patch --local`), so switch.sh's jsonpath and merge patch are checked by kubectl
itself, and the live colour is whatever the patched selector says."""
import json
import os
import subprocess
import sys

path = os.environ["FAKE_KUBECTL_STATE"]
with open(path) as f:
    st = json.load(f)
args = sys.argv[1:]
# Global flags switch.sh may pass.
for flag in ("--namespace", "--context"):
    while flag in args:
        i = args.index(flag)
        del args[i:i + 2]


def out(s):
    sys.stdout.write(s)
    sys.exit(0)


def jsonpath():
    return args[args.index("-o") + 1] if "-o" in args else ""


def colour_of(label_selector):
    return label_selector.rsplit("moltbot/color=", 1)[1].split(",")[0]


def real_kubectl(patch, output):
    r = subprocess.run([os.environ["REAL_KUBECTL"], "patch", "--local", "-f", st["service_file"],
                        "--type=merge", "-p", patch, "-o", output],
                       env={**os.environ, "KUBECONFIG": os.devnull}, capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr)
        sys.exit(r.returncode)
    return r.stdout


match args:
    case ["get", "service", "moltbot", "-o", jp] if "selector" in jp:
        out(real_kubectl("{}", jp))
    case ["rollout", "status", dep, *_]:
        name = dep.split("/", 1)[1]
        d = st["deployments"].get(name)
        if d is None:
            sys.exit(1)
        # The real command waits for the rollout; a Deployment whose pods never get Ready times out.
        if d["ready"] < d["replicas"]:
            sys.stderr.write("error: timed out waiting for the condition\n")
            sys.exit(1)
        out(f'deployment "{name}" successfully rolled out\n')
    case ["get", "deployment", name, "-o", jp]:
        d = st["deployments"][name]
        out(str(d["replicas"] if "spec.replicas" in jp else d["ready"]))
    case ["get", "job", name, *rest]:
        if name not in st["jobs"]:
            sys.exit(1)
        out(str(st["jobs"][name]) if rest else f"{name}\n")
    case ["patch", "service", "moltbot", "--type=merge", "-p", patch]:
        patched = json.loads(real_kubectl(patch, "json"))
        with open(st["service_file"], "w") as f:
            json.dump(patched, f)
        st["live"] = patched["spec"]["selector"]["moltbot/color"]
        st["patches"] += 1
        with open(path, "w") as f:
            json.dump(st, f)
        out("service/moltbot patched\n")
    case ["get", "pods", "-l", sel, "-o", _]:
        out("".join(ip + "\n" for ip in st["deployments"][f"moltbot-{colour_of(sel)}"]["ips"]))
    case ["get", "endpointslices", "-l", "kubernetes.io/service-name=moltbot", "-o", _]:
        d = st["deployments"][f"moltbot-{st['live']}"]
        out("".join(f"{ip} {'true' if i < d['ready'] else 'false'}\n" for i, ip in enumerate(d["ips"])))
sys.stderr.write(f"fake kubectl: unexpected call: {sys.argv[1:]}\n")
sys.exit(2)
