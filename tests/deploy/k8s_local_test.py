#!/usr/bin/python3
"""Runs Strata exactly as a rendered kustomization tells Kubernetes to, on
loopback, so the manifests cannot drift from the binaries.

Usage: k8s_local_test.py SOURCE_DIR STRATA_BINARY PYTHON_STUBS [OVERLAY [--static]]
With --static only step 1 runs (for the GPU base, whose workers need GPUs).

1. Renders deploy/k8s/OVERLAY (default overlays/cpu) with `kubectl kustomize`
   and checks what ties the objects to each other and to the binaries: every
   STRATA_* variable is a flag of the container's command, probes and Service
   ports reach the ports the processes listen on, the worker Service is
   headless and publishes loading pods, replicas agree, grace periods cover
   the drains.
2. Starts every replica of every workload as a process with the container's
   command and exactly its environment (fieldRef and resourceFieldRef
   resolved as the kubelet does, $(VAR) expanded), changing only what a pod
   network provides: each container port becomes a free loopback port, each
   Service or pod DNS name 127.0.0.1, and the model volume a local folder.
   Secrets are made as the README says (`strata certs`, an API key file)
   and laid out as the kubelet mounts them, items and all.
3. Asks every probe of every pod over grpc.health.v1 as the kubelet would,
   streams a completion through the gateway Service (refused without an API
   key) and compares it with
   `strata generate`, scrapes every metrics port, then sends SIGTERM to every
   pod at once (`kubectl delete`) and expects each to exit 0 within its
   terminationGracePeriodSeconds.
"""
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc
import yaml

SOURCE, STRATA, STUBS = sys.argv[1:4]
OVERLAY = sys.argv[4] if len(sys.argv) > 4 else "overlays/cpu"
STATIC = sys.argv[5:] == ["--static"]
sys.path.insert(0, STUBS)
from strata.v1 import generation_pb2, generation_pb2_grpc  # noqa: E402

PROMPT = "The old lighthouse keeper"
API_KEY = "sk-strata-k8s-test-0123456789"
MAX_TOKENS = 12
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)
        print("FAIL:", message, file=sys.stderr)
    return ok


def render():
    out = subprocess.run(["kubectl", "kustomize", os.path.join(SOURCE, "deploy/k8s", OVERLAY)],
                         capture_output=True, text=True, check=True)
    return [o for o in yaml.safe_load_all(out.stdout) if o]


def flags_of(command):
    """The environment variables `strata COMMAND` reads: its --help lists them."""
    out = subprocess.run([STRATA, command, "--help"], capture_output=True, text=True, env={})
    return set(re.findall(r"\[\$(STRATA_[A-Z0-9_]+)\]", out.stdout + out.stderr))


def parse_quantity(text):
    """A Kubernetes quantity ("32Gi", "500m", "8") as a number."""
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6,
                "G": 1e9, "T": 1e12, "m": 1e-3}
    for suffix, factor in suffixes.items():
        if str(text).endswith(suffix):
            return float(str(text)[: -len(suffix)]) * factor
    return float(text)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def port_of(address):
    return int(address.rsplit(":", 1)[1])


_handed_out = set()


def free_port():
    """A loopback port free now, below the kernel's ephemeral range.

    The pods bind their ports a second or so after this picks them. A port
    from the ephemeral range (what binding port 0 gives) can be taken in
    between by any outgoing connection on the machine, as a gateway's HTTP
    port once was; ports below that range are only ever bound on purpose.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(10000, max(10001, ephemeral_low))
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # every candidate taken: the ephemeral way
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pod:
    def __init__(self, workload, name):
        self.workload = workload
        self.name = name
        self.spec = workload["spec"]["template"]["spec"]
        self.labels = workload["spec"]["template"]["metadata"]["labels"]
        self.container = self.spec["containers"][0]
        # containerPort -> the loopback port standing in for it.
        self.ports = {p["containerPort"]: free_port() for p in self.container.get("ports", [])}
        self.named = {p["name"]: p["containerPort"] for p in self.container.get("ports", [])}
        self.process = None
        self.log = None

    def env(self):
        """The container's variables as the kubelet sets them (ordered)."""
        values = {}
        for var in self.container.get("env", []):
            if "value" in var:
                value = re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)),
                               var["value"])
            elif "fieldRef" in var["valueFrom"]:
                path = var["valueFrom"]["fieldRef"]["fieldPath"]
                value = {"metadata.name": self.name,
                         "metadata.namespace": self.workload["metadata"]["namespace"]}[path]
            else:
                ref = var["valueFrom"]["resourceFieldRef"]
                amount = parse_quantity(self.container["resources"]["limits"][ref["resource"].split(".")[1]])
                value = str(math.ceil(amount / parse_quantity(ref.get("divisor", "1"))))
            values[var["name"]] = value
        return values


def check_objects(objects):
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    check(len(workloads) == 3, f"expected coordinator, gateway and worker workloads, got {len(workloads)}")
    for w in workloads:
        what = f"{w['kind']}/{w['metadata']['name']}"
        spec = w["spec"]["template"]["spec"]
        c = spec["containers"][0]
        check(c["command"][0] == "strata" and len(c["command"]) == 2, f"{what}: command {c['command']}")
        env = {e["name"]: e for e in c.get("env", [])}
        known = flags_of(c["command"][1])
        check(len(known) > 5, f"{what}: `strata {c['command'][1]} --help` lists no variables")
        for name in env:
            if name.startswith("STRATA_"):
                check(name in known, f"{what}: {name} is not a flag of `strata {c['command'][1]}`")
        listen = port_of(env["STRATA_LISTEN"]["value"])
        metrics = port_of(env["STRATA_METRICS_LISTEN"]["value"])
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        check(named.get("grpc") == listen, f"{what}: port grpc is not STRATA_LISTEN's {listen}")
        check(named.get("metrics") == metrics, f"{what}: port metrics is not {metrics}")
        # The gRPC port is mutual TLS; the kubelet's probes ask the plaintext
        # health-only port.
        for var in ("STRATA_TLS_CERT", "STRATA_TLS_KEY", "STRATA_TLS_CA"):
            check(var in env, f"{what}: {var} is not set (the cluster runs mutual TLS)")
        health = port_of(env["STRATA_HEALTH_LISTEN"]["value"]) if "STRATA_HEALTH_LISTEN" in env else None
        check(named.get("health") == health, f"{what}: port health is not STRATA_HEALTH_LISTEN's")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not check(p is not None and "grpc" in p, f"{what}: no gRPC {probe}"):
                continue
            check(p["grpc"]["port"] == health, f"{what}: {probe} asks port {p['grpc']['port']}")
            want = "strata.liveness" if probe == "livenessProbe" else None
            check(p["grpc"].get("service") == want, f"{what}: {probe} service {p['grpc'].get('service')}")
        drain_s = int(env["STRATA_DRAIN_TIMEOUT_MS"]["value"]) / 1000
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_s = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        check(spec["terminationGracePeriodSeconds"] > drain_s + pre_stop_s,
              f"{what}: terminationGracePeriodSeconds does not cover the drain")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            check(m["name"] in volumes, f"{what}: mount {m['name']} has no volume")
        # Every Service that selects these pods reaches a named port of them.
        for s in services.values():
            if matches(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]):
                for p in s["spec"]["ports"]:
                    check(p["targetPort"] in named, f"Service/{s['metadata']['name']}: no port {p['targetPort']}")
    sets = by_kind.get("StatefulSet", [])
    if check(len(sets) == 1, "one worker StatefulSet"):
        workers = sets[0]
        headless = services.get(workers["spec"]["serviceName"], {}).get("spec", {})
        check(headless.get("clusterIP") == "None", "the workers' Service is not headless")
        check(headless.get("publishNotReadyAddresses") is True,
              "the workers' Service does not publish loading workers")
        coordinator = [w for w in workloads if w["spec"]["template"]["spec"]["containers"][0]["command"][1] == "coordinator"]
        env = {e["name"]: e.get("value") for e in coordinator[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
        check(int(env["STRATA_WORKERS"]) == workers["spec"]["replicas"],
              "coordinator STRATA_WORKERS differs from the StatefulSet's replicas")
        for pdb in by_kind.get("PodDisruptionBudget", []):
            check(matches(pdb["spec"]["selector"]["matchLabels"], workers["spec"]["template"]["metadata"]["labels"]),
                  "the PodDisruptionBudget does not select the workers")
    # The PrometheusRule carries exactly deploy/prometheus/alerts.yml's rules
    # (which promtool checks and unit-tests).
    rules = by_kind.get("PrometheusRule", [])
    if check(len(rules) == 1, "one PrometheusRule"):
        with open(os.path.join(SOURCE, "deploy/prometheus/alerts.yml")) as f:
            check(rules[0]["spec"]["groups"] == yaml.safe_load(f)["groups"],
                  "PrometheusRule/strata differs from deploy/prometheus/alerts.yml")
    check_network_policies(by_kind.get("NetworkPolicy", []), workloads)
    for sm in by_kind.get("ServiceMonitor", []):
        chosen = [s for s in services.values() if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        check(len(chosen) == 3, f"ServiceMonitor selects {len(chosen)} Services, not 3")
        for s in chosen:
            for e in sm["spec"]["endpoints"]:
                check(e["port"] in [p["name"] for p in s["spec"]["ports"]],
                      f"ServiceMonitor port {e['port']} missing on Service/{s['metadata']['name']}")
    return workloads, services


def component(w):
    return w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")


def check_network_policies(policies, workloads):
    """Ingress is denied by default; the coordinator's and workers' gRPC ports
    admit only the roles that call them; every named port exists."""
    pods = {component(w): w for w in workloads}
    default_deny = [p for p in policies if not p["spec"].get("ingress")
                    and p["spec"].get("policyTypes") == ["Ingress"]]
    check(len(default_deny) == 1 and default_deny[0]["spec"]["podSelector"]["matchLabels"]
          == {"app.kubernetes.io/name": "strata"}, "no default-deny NetworkPolicy for Strata pods")
    grpc_from = {}
    for p in policies:
        selected = [c for c, w in pods.items()
                    if matches(p["spec"]["podSelector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])]
        check(selected, f"NetworkPolicy/{p['metadata']['name']} selects no Strata pod")
        for rule in p["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for c in selected:
                    named = [x["name"] for x in pods[c]["spec"]["template"]["spec"]["containers"][0]["ports"]]
                    check(port["port"] in named,
                          f"NetworkPolicy/{p['metadata']['name']}: {c} has no port {port['port']}")
                if port["port"] != "grpc":
                    continue
                sources = rule.get("from")
                for c in selected:
                    if sources is None:
                        grpc_from[c] = {"*"}
                    else:
                        grpc_from.setdefault(c, set()).update(
                            f["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "?")
                            for f in sources if "podSelector" in f)
    check(grpc_from.get("coordinator") == {"gateway", "worker"},
          f"the coordinator's gRPC port admits {grpc_from.get('coordinator')}, not gateways and workers")
    check(grpc_from.get("worker") == {"coordinator", "worker"},
          f"a worker's gRPC port admits {grpc_from.get('worker')}, not the coordinator and workers")
    check(grpc_from.get("gateway") == {"*"}, "the gateway's public port is not open to clients")


class LocalCluster:
    def __init__(self, workloads, services, model_dir, logs, secrets):
        self.services = services
        self.model_dir = model_dir
        self.logs = logs
        self.secrets = secrets  # Secret name -> local folder of its keys
        self.pods = []
        for w in workloads:
            for i in range(w["spec"].get("replicas", 1)):
                self.pods.append(Pod(w, f"{w['metadata']['name']}-{i}"))

    def service_target(self, service, port, pod_name=None):
        """127.0.0.1:<local port> for `service`:`port` (a pod of it, or `pod_name`)."""
        s = self.services[service]
        spec_ports = [p for p in s["spec"]["ports"] if p["port"] == port]
        if not spec_ports:
            raise AssertionError(f"Service/{service} has no port {port}")
        spec_port = spec_ports[0]
        pods = [p for p in self.pods if matches(s["spec"]["selector"], p.labels)
                and (pod_name is None or p.name == pod_name)]
        if not pods:
            raise AssertionError(f"Service/{service} selects no pod {pod_name or ''}")
        pod = pods[0]
        target = spec_port["targetPort"]
        container_port = pod.named[target] if isinstance(target, str) else target
        return f"127.0.0.1:{pod.ports[container_port]}"

    def secret_volume(self, pod, volume):
        """A pod's secret (or projected) volume as the kubelet lays it out:
        each item's key under its path; fails on a key the Secret lacks."""
        folder = os.path.join(self.logs, "volumes", pod.name, volume["name"])
        os.makedirs(folder, exist_ok=True)
        sources = [s["secret"] for s in volume["projected"]["sources"]] if "projected" in volume else [
            dict(volume["secret"], name=volume["secret"]["secretName"])]
        for source in sources:
            local = self.secrets[source["name"]]
            items = source.get("items") or [{"key": k, "path": k} for k in os.listdir(local)]
            for item in items:
                key = os.path.join(local, item["key"])
                if not check(os.path.exists(key), f"{pod.name}: Secret {source['name']} has no key {item['key']}"):
                    continue
                with open(key, "rb") as f, open(os.path.join(folder, item["path"]), "wb") as out:
                    out.write(f.read())
        return folder

    def localise(self, pod, value):
        """What a pod network and the volumes provide, on loopback."""
        for m in pod.container.get("volumeMounts", []):
            volume = [v for v in pod.spec["volumes"] if v["name"] == m["name"]][0]
            if "persistentVolumeClaim" in volume and value.startswith(m["mountPath"] + "/"):
                return self.model_dir + value[len(m["mountPath"]):]
            if ("secret" in volume or "projected" in volume) and value.startswith(m["mountPath"] + "/"):
                return self.secret_volume(pod, volume) + value[len(m["mountPath"]):]
        match = re.fullmatch(r"([\w.-]+):(\d+)", value)
        if not match:
            return value
        host, port = match.group(1), int(match.group(2))
        if host == "0.0.0.0":
            return f"127.0.0.1:{pod.ports[port]}"
        ns = pod.workload["metadata"]["namespace"]
        parts = host.split(".")
        if parts[0] in self.services and parts[1:] in ([], [ns], [ns, "svc"], [ns, "svc", "cluster", "local"]):
            return self.service_target(parts[0], port)
        if len(parts) >= 2 and parts[1] in self.services and parts[2:] in ([ns, "svc"], [ns, "svc", "cluster", "local"]):
            return self.service_target(parts[1], port, pod_name=parts[0])
        raise AssertionError(f"{pod.name}: cannot resolve {value}")

    def start(self):
        for pod in self.pods:
            env = {"PATH": os.environ["PATH"], "HOME": self.logs}
            for name, value in pod.env().items():
                env[name] = self.localise(pod, value)
            command = [STRATA] + pod.container["command"][1:] + pod.container.get("args", [])
            pod.log = os.path.join(self.logs, pod.name + ".log")
            with open(pod.log, "w") as log:
                pod.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self):
        for pod in self.pods:
            if pod.process and pod.process.poll() is None:
                pod.process.kill()
                pod.process.wait()


def health(address, service, timeout=2.0):
    """grpc.health.v1.Health/Check, encoded by hand: status 1 is SERVING."""
    request = b"\x0a" + bytes([len(service)]) + service.encode() if service else b""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            reply = call(request, timeout=timeout)
        except grpc.RpcError as e:
            return e.code().name
    return "SERVING" if reply == b"\x08\x01" else "NOT_SERVING"


def probe_until(pod, probe, limit_s):
    p = pod.container[probe]
    address = f"127.0.0.1:{pod.ports[p['grpc']['port']]}"
    deadline = time.time() + min(limit_s, p.get("periodSeconds", 10) * p.get("failureThreshold", 3))
    status = None
    while time.time() < deadline:
        status = health(address, p["grpc"].get("service", ""))
        if status == "SERVING":
            return True
        if pod.process.poll() is not None:
            break
        time.sleep(0.1)
    return check(False, f"{pod.name}: {probe} answered {status}")


def main():
    objects = render()
    workloads, services = check_objects(objects)
    if failures:
        return 1
    if STATIC:
        print(f"{OVERLAY}: the objects agree with each other and with the binaries' flags")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "models", "current")
        subprocess.run([STRATA, "make-model", "--out", model, "--init", "bigram"], check=True,
                       env={"PATH": os.environ["PATH"]}, capture_output=True)
        # The Secrets the README has you make: certificates from `strata
        # certs` (workers named after their pods) and an API key file.
        workers = [w for w in workloads if component(w) == "worker"][0]
        names = ",".join(f"{workers['metadata']['name']}-{i}" for i in range(workers["spec"]["replicas"]))
        tls = os.path.join(tmp, "secrets", "strata-tls")
        subprocess.run([STRATA, "certs", "--out", tls, "--workers", "0", "--worker-names", names],
                       check=True, capture_output=True, env={"PATH": os.environ["PATH"]})
        os.remove(os.path.join(tls, "ca.key"))  # never in the cluster
        keys = os.path.join(tmp, "secrets", "strata-api-keys")
        os.makedirs(keys)
        with open(os.path.join(keys, "keys"), "w") as f:
            f.write(API_KEY + "\n")
        cluster = LocalCluster(workloads, services, os.path.join(tmp, "models"), tmp,
                               {"strata-tls": tls, "strata-api-keys": keys})
        text = None
        try:
            cluster.start()
            # The kubelet starts the liveness probe once the startup probe
            # passed; the process must answer it (and only it) while loading.
            for pod in cluster.pods:
                probe_until(pod, "livenessProbe", 30)
            for pod in cluster.pods:
                probe_until(pod, "startupProbe", 60)
                probe_until(pod, "readinessProbe", 10)
            if failures:
                raise AssertionError("probes")

            reference = subprocess.run(
                [STRATA, "generate", "--model", model, "--prompt", PROMPT, "--max-tokens", str(MAX_TOKENS)],
                capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
            gateway = cluster.service_target("strata-gateway", 50051)
            with grpc.insecure_channel(gateway) as channel:
                stub = generation_pb2_grpc.GenerationStub(channel)
                text, ids, finished = "", [], None
                try:
                    next(iter(stub.Generate(generation_pb2.GenerateRequest(prompt=PROMPT, max_tokens=1),
                                            timeout=30)))
                    check(False, "the gateway Service served a request without an API key")
                except grpc.RpcError as e:
                    check(e.code() == grpc.StatusCode.UNAUTHENTICATED, f"without a key: {e.code()}")
                for event in stub.Generate(generation_pb2.GenerateRequest(prompt=PROMPT, max_tokens=MAX_TOKENS),
                                           timeout=60, metadata=[("authorization", "Bearer " + API_KEY)]):
                    if event.HasField("delta"):
                        text += event.delta.text
                        ids += event.delta.token_ids
                    else:
                        finished = event.finished
            check(finished is not None and finished.completion_tokens == MAX_TOKENS,
                  f"the gateway Service streamed {len(ids)} tokens, finished={finished}")
            check(reference.startswith(PROMPT) and text == reference[len(PROMPT):].rstrip("\n")
                  or text == reference.rstrip("\n"),
                  f"through the manifests: {text!r}; strata generate: {reference!r}")

            # The gateway Service's HTTP port: OpenAI's API, behind the same key.
            http = cluster.service_target("strata-gateway", 8000)
            request = urllib.request.Request(f"http://{http}/v1/models",
                                             headers={"Authorization": "Bearer " + API_KEY})
            with urllib.request.urlopen(request, timeout=10) as r:
                models = json.loads(r.read().decode())
            check(models["data"][0]["id"] == "current", f"/v1/models through the Service: {models}")
            try:
                urllib.request.urlopen(f"http://{http}/v1/models", timeout=10)
                check(False, "the HTTP API answered without an API key")
            except urllib.error.HTTPError as e:
                check(e.code == 401, f"the HTTP API without a key: {e.code}")

            for pod in cluster.pods:
                with urllib.request.urlopen(f"http://127.0.0.1:{pod.ports[pod.named['metrics']]}/metrics",
                                            timeout=5) as r:
                    body = r.read().decode()
                check("strata_" in body, f"{pod.name}: no strata_ series at its metrics port")

            # `kubectl delete`: SIGTERM to every pod at once.
            for pod in cluster.pods:
                pod.process.send_signal(signal.SIGTERM)
            for pod in cluster.pods:
                grace = pod.spec["terminationGracePeriodSeconds"]
                try:
                    code = pod.process.wait(timeout=grace)
                    check(code == 0, f"{pod.name}: exit status {code} after SIGTERM")
                except subprocess.TimeoutExpired:
                    check(False, f"{pod.name}: still running {grace} s after SIGTERM")
        except Exception as e:  # report with the processes' logs
            check(False, f"{type(e).__name__}: {e}")
        finally:
            cluster.stop()
            if failures:
                for pod in cluster.pods:
                    if pod.log and os.path.exists(pod.log):
                        print(f"--- {pod.name} ---", file=sys.stderr)
                        print(open(pod.log).read()[-4000:], file=sys.stderr)
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        return 1
    print(f"{OVERLAY}: {len(cluster.pods)} pods ran from the manifests; probes, metrics and "
          f"SIGTERM as Kubernetes would; the gateway Service streamed {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
