#!/usr/bin/env python3
"""Cross-object checks on rendered Kubernetes manifests that schema validation cannot see.

    consistency.py k8s RENDERED.yaml [--self-test]
    consistency.py compose CONFIG.json [--self-test]

k8s (the output of `kubectl kustomize`):
  selector    every Service/PDB/NetworkPolicy selector matches the pod labels of a Deployment
  ports       probe, Service targetPort, Ingress and NetworkPolicy ports name a container port that exists
  hpa         scaleTargetRef names a Deployment; Utilization targets have requests; min <= max
  refs        secretKeyRef / configMapKeyRef / envFrom / secret and configMap volumes name an existing
              object and key (Secrets listed in the annotation `moltbot/external-secrets` are created out
              of band and are exempt), volumeMounts name a volume
  grace       terminationGracePeriodSeconds >= shutdown_delay + shutdown_grace (+ preStop sleep), read from
              the container's MOLTBOT_SERVER__* env or the mounted moltbot.toml, else 5s + 25s
  pdb         minAvailable leaves room for a voluntary eviction (< replicas / HPA minReplicas)
  security    moltbot pods: runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, ALL caps
              dropped, seccomp RuntimeDefault
compose (`docker compose config --format json`):
  secrets     every MOLTBOT_*_FILE / API_KEY_FILE points into /run/secrets/<name> of a secret the service
              mounts and the project defines
  ports       the admin port 8080 is published on 127.0.0.1 only; 5000 is never published
  health      moltbot, postgres and redis have healthchecks; depends_on conditions name real services

--self-test breaks a copy of the input in one way per check and fails unless each breakage is reported
(so a checker that silently passes everything cannot stay green). Exit status 1 on any finding.
"""
import copy
import json
import re
import sys
import tomllib

import yaml

DEFAULT_SHUTDOWN_DELAY = 5.0
DEFAULT_SHUTDOWN_GRACE = 25.0
POD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}
UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def seconds(text):
    """humantime-style durations as moltbot accepts them: 5s, 1m30s, 500ms, 2min."""
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        if m.start() != pos or m.group(2) not in UNITS:
            raise ValueError(f"cannot read duration {text!r}")
        total += float(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"cannot read duration {text!r}")
    return total


def matches(selector, labels):
    sel = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    if "matchExpressions" in (selector or {}):
        raise ValueError("matchExpressions are not supported by this checker")
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


class K8s:
    def __init__(self, docs):
        self.docs = [d for d in docs if d]
        self.errors = []

    def err(self, check, obj, msg):
        self.errors.append(f"[{check}] {obj['kind']}/{obj['metadata']['name']}: {msg}")

    def of(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def find(self, kind, name, ns):
        for d in self.of(kind):
            if d["metadata"]["name"] == name and d["metadata"].get("namespace") == ns:
                return d
        return None

    @staticmethod
    def pod_spec(obj):
        return obj["spec"]["template"]["spec"]

    def workloads(self, ns=None):
        return [d for d in self.docs if d["kind"] in POD_KINDS and (ns is None or d["metadata"].get("namespace") == ns)]

    def deployments_matching(self, selector, ns):
        return [d for d in self.of("Deployment") if d["metadata"].get("namespace") == ns
                and matches(selector, d["spec"]["template"]["metadata"].get("labels", {}))]

    @staticmethod
    def container_ports(obj):
        ports = {}
        for c in K8s.pod_spec(obj).get("containers", []):
            for p in c.get("ports", []):
                ports[p["containerPort"]] = p
                if "name" in p:
                    ports[p["name"]] = p
        return ports

    def run(self):
        for check in (self.selectors, self.ports, self.hpa, self.refs, self.grace, self.pdb, self.security):
            check()
        return self.errors

    def selectors(self):
        for svc in self.of("Service"):
            sel = svc["spec"].get("selector")
            if sel and not self.deployments_matching(sel, svc["metadata"].get("namespace")):
                self.err("selector", svc, f"selector {sel} matches no Deployment's pods")
        for kind in ("PodDisruptionBudget", "NetworkPolicy"):
            for obj in self.of(kind):
                sel = obj["spec"].get("selector") or obj["spec"].get("podSelector")
                if not self.deployments_matching(sel, obj["metadata"].get("namespace")):
                    self.err("selector", obj, f"selector {sel} matches no Deployment's pods")
        for dep in self.of("Deployment"):
            labels = dep["spec"]["template"]["metadata"].get("labels", {})
            if not matches(dep["spec"]["selector"], labels):
                self.err("selector", dep, "spec.selector does not match its own pod template labels")

    def ports(self):
        for w in self.workloads():
            ports = self.container_ports(w)
            for c in self.pod_spec(w).get("containers", []):
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    p = c.get(probe)
                    if not p:
                        continue
                    handler = p.get("httpGet") or p.get("tcpSocket") or p.get("grpc") or {}
                    if "port" in handler and handler["port"] not in ports:
                        self.err("ports", w, f"{c['name']}.{probe} uses port {handler['port']!r}, not a container port")
        for svc in self.of("Service"):
            ns = svc["metadata"].get("namespace")
            deps = self.deployments_matching(svc["spec"].get("selector") or {}, ns)
            for p in svc["spec"].get("ports", []):
                target = p.get("targetPort", p["port"])
                for d in deps:
                    if target not in self.container_ports(d):
                        self.err("ports", svc, f"targetPort {target!r} is not a container port of {d['metadata']['name']}")
        for ing in self.of("Ingress"):
            ns = ing["metadata"].get("namespace")
            for rule in ing["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    b = path["backend"]["service"]
                    svc = self.find("Service", b["name"], ns)
                    if svc is None:
                        self.err("ports", ing, f"backend service {b['name']} does not exist")
                        continue
                    port = b["port"].get("name", b["port"].get("number"))
                    if not any(port in (p.get("name"), p["port"]) for p in svc["spec"]["ports"]):
                        self.err("ports", ing, f"service {b['name']} has no port {port!r}")
        for pol in self.of("NetworkPolicy"):
            deps = self.deployments_matching(pol["spec"]["podSelector"], pol["metadata"].get("namespace"))
            for rule in pol["spec"].get("ingress", []):
                for p in rule.get("ports", []):
                    for d in deps:
                        if "port" in p and p["port"] not in self.container_ports(d):
                            self.err("ports", pol, f"port {p['port']!r} is not a container port of {d['metadata']['name']}")

    def hpa(self):
        for h in self.of("HorizontalPodAutoscaler"):
            ref = h["spec"]["scaleTargetRef"]
            target = self.find(ref["kind"], ref["name"], h["metadata"].get("namespace"))
            if target is None:
                self.err("hpa", h, f"scaleTargetRef {ref['kind']}/{ref['name']} does not exist")
                continue
            if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
                self.err("hpa", h, "minReplicas > maxReplicas")
            for m in h["spec"].get("metrics", []):
                if m["type"] == "Resource" and m["resource"]["target"]["type"] == "Utilization":
                    res = m["resource"]["name"]
                    for c in self.pod_spec(target)["containers"]:
                        if res not in c.get("resources", {}).get("requests", {}):
                            self.err("hpa", h, f"{res} utilization needs a {res} request on container {c['name']}")

    def external(self, obj):
        ann = obj["metadata"].get("annotations", {}).get("moltbot/external-secrets", "")
        return {s.strip() for s in ann.split(",") if s.strip()}

    def data_keys(self, kind, name, ns):
        obj = self.find(kind, name, ns)
        if obj is None:
            return None
        return set(obj.get("data") or {}) | set(obj.get("stringData") or {}) | set(obj.get("binaryData") or {})

    def ref(self, w, kind, name, key, optional, where):
        if optional:
            return
        if kind == "Secret" and name in self.external(w):
            return
        keys = self.data_keys(kind, name, w["metadata"].get("namespace"))
        if keys is None:
            self.err("refs", w, f"{where}: {kind} {name} does not exist")
        elif key is not None and key not in keys:
            self.err("refs", w, f"{where}: {kind} {name} has no key {key!r}")

    def refs(self):
        for w in self.workloads():
            spec = self.pod_spec(w)
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                for e in c.get("env", []):
                    vf = e.get("valueFrom", {})
                    for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                        if field in vf:
                            r = vf[field]
                            self.ref(w, kind, r["name"], r["key"], r.get("optional", False), f"env {e['name']}")
                for ef in c.get("envFrom", []):
                    for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                        if field in ef:
                            self.ref(w, kind, ef[field]["name"], None, ef[field].get("optional", False), "envFrom")
                for m in c.get("volumeMounts", []):
                    if m["name"] not in vols:
                        self.err("refs", w, f"{c['name']} mounts volume {m['name']!r}, which is not defined")
            for v in vols.values():
                for field, kind, name_field in (("secret", "Secret", "secretName"), ("configMap", "ConfigMap", "name")):
                    if field in v:
                        src = v[field]
                        items = src.get("items") or [None]
                        for it in items:
                            self.ref(w, kind, src[name_field], it and it["key"], src.get("optional", False),
                                     f"volume {v['name']}")
            # A *_FILE variable must point into a mounted secret item.
            for c in spec.get("containers", []):
                mounts = {m["mountPath"].rstrip("/"): vols.get(m["name"], {}) for m in c.get("volumeMounts", [])}
                for e in c.get("env", []):
                    if e["name"].endswith("_FILE") and "value" in e:
                        d, _, f = e["value"].rpartition("/")
                        v = mounts.get(d)
                        if v is None or "secret" not in v:
                            self.err("refs", w, f"env {e['name']}={e['value']} is not inside a mounted Secret")
                        elif v["secret"].get("items") and f not in [i["path"] for i in v["secret"]["items"]]:
                            self.err("refs", w, f"env {e['name']}={e['value']}: the Secret volume has no item {f!r}")

    def moltbot_config(self, w, c):
        """(shutdown_delay, shutdown_grace) in seconds for a moltbot container."""
        env = {e["name"]: e for e in c.get("env", [])}
        toml = {}
        cfg = env.get("MOLTBOT_CONFIG", {}).get("value")
        if cfg:
            d, _, f = cfg.rpartition("/")
            vols = {v["name"]: v for v in self.pod_spec(w).get("volumes", [])}
            for m in c.get("volumeMounts", []):
                v = vols.get(m["name"], {})
                if m["mountPath"].rstrip("/") == d and "configMap" in v:
                    cm = self.find("ConfigMap", v["configMap"]["name"], w["metadata"].get("namespace"))
                    if cm and f in cm.get("data", {}):
                        toml = tomllib.loads(cm["data"][f])
        server = toml.get("server", {})

        def value(var, key, default):
            e = env.get(var)
            if e is not None:
                if "value" in e:
                    return seconds(e["value"])
                r = e.get("valueFrom", {}).get("configMapKeyRef")
                if r:
                    cm = self.find("ConfigMap", r["name"], w["metadata"].get("namespace"))
                    return seconds(cm["data"][r["key"]])
            return seconds(server[key]) if key in server else default

        return (value("MOLTBOT_SERVER__SHUTDOWN_DELAY", "shutdown_delay", DEFAULT_SHUTDOWN_DELAY),
                value("MOLTBOT_SERVER__SHUTDOWN_GRACE", "shutdown_grace", DEFAULT_SHUTDOWN_GRACE))

    @staticmethod
    def is_moltbot(c):
        return re.search(r"(^|/)moltbot(:|@|$)", c.get("image", "")) is not None

    def grace(self):
        for d in self.of("Deployment"):
            spec = self.pod_spec(d)
            tgps = spec.get("terminationGracePeriodSeconds", 30)
            for c in spec["containers"]:
                if not self.is_moltbot(c) or (c.get("args") or ["serve"])[0] != "serve":
                    continue
                delay, grace = self.moltbot_config(d, c)
                pre = c.get("lifecycle", {}).get("preStop", {})
                sleep = pre.get("sleep", {}).get("seconds", 0)
                cmd = pre.get("exec", {}).get("command", [])
                if cmd and cmd[0].endswith("sleep"):
                    sleep += seconds(cmd[1] if re.search(r"[a-z]$", cmd[1]) else cmd[1] + "s")
                need = delay + grace + sleep
                if tgps < need:
                    self.err("grace", d, f"terminationGracePeriodSeconds {tgps} < shutdown_delay {delay:g} + "
                                         f"shutdown_grace {grace:g} + preStop {sleep:g} = {need:g}")

    def pdb(self):
        for p in self.of("PodDisruptionBudget"):
            ns = p["metadata"].get("namespace")
            for d in self.deployments_matching(p["spec"]["selector"], ns):
                replicas = d["spec"].get("replicas", 1)
                for h in self.of("HorizontalPodAutoscaler"):
                    if h["metadata"].get("namespace") == ns and h["spec"]["scaleTargetRef"]["name"] == d["metadata"]["name"]:
                        replicas = h["spec"].get("minReplicas", 1)
                m = p["spec"].get("minAvailable")
                if isinstance(m, int) and m >= replicas:
                    self.err("pdb", p, f"minAvailable {m} >= {replicas} replicas of {d['metadata']['name']}: "
                                       "no node could ever be drained")

    def security(self):
        for w in self.workloads():
            spec = self.pod_spec(w)
            psc = spec.get("securityContext", {})
            for c in spec["containers"]:
                if not self.is_moltbot(c):
                    continue
                sc = c.get("securityContext", {})
                problems = []
                if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                    problems.append("runAsNonRoot")
                if not sc.get("readOnlyRootFilesystem"):
                    problems.append("readOnlyRootFilesystem")
                if sc.get("allowPrivilegeEscalation", True):
                    problems.append("allowPrivilegeEscalation: false")
                if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                    problems.append("capabilities.drop [ALL]")
                seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
                if seccomp.get("type") != "RuntimeDefault":
                    problems.append("seccompProfile RuntimeDefault")
                if problems:
                    self.err("security", w, f"container {c['name']} lacks " + ", ".join(problems))


def k8s_breakages(docs):
    """(check, description, mutate(docs)) — each must make exactly that check report."""
    def first(kind, pred=lambda d: True):
        return next(d for d in docs if d and d["kind"] == kind and pred(d))

    def dep():
        return first("Deployment")

    def c0():
        return dep()["spec"]["template"]["spec"]["containers"][0]

    def svc():
        return first("Service", lambda d: d["spec"].get("selector"))

    out = [
        ("selector", "Service selector typo", lambda: svc()["spec"]["selector"].update({"app.kubernetes.io/name": "moltbott"})),
        ("selector", "PDB selector typo", lambda: first("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/component": "srv"})),
        ("ports", "probe on a port that is not declared", lambda: c0()["readinessProbe"]["httpGet"].update({"port": "metrics"})),
        ("ports", "Service targetPort that is not declared", lambda: svc()["spec"]["ports"][0].update({"targetPort": 9999})),
        ("hpa", "HPA target renamed", lambda: first("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update({"name": "moltbot-old"})),
        ("hpa", "HPA on memory without a memory request", lambda: c0()["resources"]["requests"].pop("memory")),
        ("refs", "secretKeyRef to a missing Secret", lambda: next(
            e for e in c0()["env"] if "secretKeyRef" in e.get("valueFrom", {}))["valueFrom"]["secretKeyRef"].update(
            {"key": "NO_SUCH_KEY", "name": "no-such-secret"})),
        ("refs", "configMap volume naming a missing ConfigMap", lambda: next(
            v for v in dep()["spec"]["template"]["spec"]["volumes"] if "configMap" in v)["configMap"].update({"name": "nope"})),
        ("refs", "_FILE outside any secret mount", lambda: next(
            e for e in c0()["env"] if e["name"].endswith("_FILE")).update({"value": "/etc/passwd"})),
        ("grace", "terminationGracePeriodSeconds below shutdown_delay + shutdown_grace", lambda: dep()["spec"]["template"]["spec"].update({"terminationGracePeriodSeconds": 20})),
        ("grace", "preStop sleep not accounted for", lambda: c0().update({"lifecycle": {"preStop": {"sleep": {"seconds": 15}}}})),
        ("grace", "shutdown_grace raised in the environment", lambda: c0()["env"].append({"name": "MOLTBOT_SERVER__SHUTDOWN_GRACE", "value": "1m"})),
        ("pdb", "PDB minAvailable equal to the replicas", lambda: first("PodDisruptionBudget")["spec"].update({"minAvailable": 10})),
        ("security", "root filesystem writable", lambda: c0()["securityContext"].update({"readOnlyRootFilesystem": False})),
    ]
    return out


class Compose:
    ADMIN, DEBUG = 8080, 5000

    def __init__(self, cfg):
        self.cfg = cfg
        self.errors = []

    def err(self, check, svc, msg):
        self.errors.append(f"[{check}] service {svc}: {msg}")

    @staticmethod
    def is_server(s):
        """A moltbot service that runs `serve` (not the init-db one-shot)."""
        return "moltbot" in s.get("image", "") and (s.get("command") or ["serve"])[0] == "serve"

    def run(self):
        services = self.cfg.get("services", {})
        secrets = self.cfg.get("secrets", {})
        for name, s in services.items():
            mounted = {}
            for sec in s.get("secrets", []):
                src = sec["source"]
                if src not in secrets:
                    self.err("secrets", name, f"uses secret {src!r}, which the project does not define")
                mounted[sec.get("target") if str(sec.get("target", "")).startswith("/") else
                        f"/run/secrets/{sec.get('target') or src}"] = src
            for var, val in (s.get("environment") or {}).items():
                if var.endswith("_FILE") and (var.startswith("MOLTBOT_") or var in ("API_KEY_FILE",)) and val:
                    if val not in mounted:
                        self.err("secrets", name, f"{var}={val} is not a secret mounted in this service")
            for p in s.get("ports", []):
                target, ip = int(p["target"]), p.get("host_ip", "")
                if target == self.DEBUG:
                    self.err("ports", name, "publishes the debug port 5000")
                if target == self.ADMIN and ip not in ("127.0.0.1", "::1"):
                    self.err("ports", name, f"publishes the admin port 8080 on {ip or 'every address'}")
            for dep, cond in (s.get("depends_on") or {}).items():
                if dep not in services:
                    self.err("health", name, f"depends_on unknown service {dep}")
                elif cond.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                    self.err("health", name, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
        for name, s in services.items():
            if any(k in s.get("image", "") for k in ("postgres", "redis")) or self.is_server(s):
                hc = s.get("healthcheck")
                if not hc or hc.get("disable"):
                    self.err("health", name, "has no healthcheck")
        return self.errors


def compose_breakages(cfg):
    def svc(pred):
        return next(s for n, s in cfg["services"].items() if pred(n, s))

    def moltbot():
        return svc(lambda n, s: Compose.is_server(s))

    return [
        ("secrets", "_FILE pointing at an unmounted secret", lambda: moltbot()["environment"].update(
            {"MOLTBOT_AUTH__JWT_SECRET_FILE": "/run/secrets/nope"})),
        ("secrets", "service using an undefined secret", lambda: moltbot()["secrets"].append({"source": "undefined"})),
        ("ports", "admin port published on all addresses", lambda: next(
            p for p in moltbot()["ports"] if p["target"] == 8080).update({"host_ip": "0.0.0.0"})),
        ("ports", "debug port published", lambda: moltbot()["ports"].append({"target": 5000, "published": "5000"})),
        ("health", "redis without a healthcheck", lambda: svc(lambda n, s: "redis" in s.get("image", "")).pop("healthcheck")),
    ]


def main(argv):
    if len(argv) < 3 or argv[1] not in ("k8s", "compose"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, path, self_test = argv[1], argv[2], "--self-test" in argv[3:]
    with open(path) as f:
        if mode == "k8s":
            data = [d for d in yaml.safe_load_all(f) if d]
            check, breakages = (lambda d: K8s(d).run()), k8s_breakages
        else:
            data = json.load(f)
            check, breakages = (lambda d: Compose(d).run()), compose_breakages
    errors = check(data)
    for e in errors:
        print(f"FAIL {path}: {e}")
    if errors:
        return 1
    print(f"ok   {path}: {mode} consistency")
    if not self_test:
        return 0
    missed = 0
    for i, (name, desc, _) in enumerate(breakages(data)):
        broken = copy.deepcopy(data)
        breakages(broken)[i][2]()  # the same breakage, applied to the copy
        found = [e for e in check(broken) if e.startswith(f"[{name}]")]
        if found:
            print(f"ok   self-test: {desc} → {found[0]}")
        else:
            print(f"FAIL self-test: {desc}: the [{name}] check did not notice")
            missed += 1
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
