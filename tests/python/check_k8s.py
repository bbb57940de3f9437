"""Checks the Kubernetes manifests of deploy/k8s (tests/tests/deploy_k8s.rs).

    check_k8s.py REPO [OVERLAY=RENDERED.yaml ...]

Every YAML file under deploy/k8s must parse; every kustomization must name
files that exist; the base's manifests (complete resources) are validated
against the Kubernetes API schemas (kubernetes-validate, offline, strict:
unknown fields fail). Each rendered overlay (`kubectl kustomize` output)
is validated the same way and its structure checked: per datacenter a
ConfigMap, a headless seed Service, a client Service, a StatefulSet and a
PodDisruptionBudget whose selectors match the pod labels; ports and probes
on the named container ports; environment names the image's entrypoint
reads; seeds naming pod 0 of every StatefulSet through its headless
Service; the non-root uid of the Containerfile. Exits non-zero on the
first problem, saying what it is.
"""

import copy
import os
import re
import sys

import kubernetes_validate
import yaml

K8S_VERSIONS = ["1.30.0", "1.34.0"]


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def validate(doc, where):
    for v in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} against {v}: {e.message} at {list(e.path)}")


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def entrypoint_vars(repo):
    text = open(os.path.join(repo, "deploy/container/entrypoint.sh")).read()
    return set(re.findall(r"\$\{(GYRE_[A-Z_]+)", text))


def containerfile_uid(repo):
    text = open(os.path.join(repo, "deploy/container/Containerfile")).read()
    m = re.search(r"useradd[^\n]*--uid (\d+)", text)
    check(m, "no useradd --uid in the Containerfile")
    return int(m.group(1))


def check_files(repo):
    root = os.path.join(repo, "deploy/k8s")
    n = 0
    for d, _, files in os.walk(root):
        for f in sorted(files):
            if not f.endswith((".yaml", ".yml")):
                continue
            path = os.path.join(d, f)
            rel = os.path.relpath(path, repo)
            try:
                docs = [x for x in yaml.safe_load_all(open(path)) if x is not None]
            except yaml.YAMLError as e:
                fail(f"{rel} is not YAML: {e}")
            check(docs, f"{rel} is empty")
            n += 1
            for doc in docs:
                check(isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc,
                      f"{rel}: a document without kind/apiVersion")
            if f == "kustomization.yaml":
                k = docs[0]
                check(k["kind"] == "Kustomization", f"{rel}: kind {k['kind']}")
                for r in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
                    check(os.path.exists(os.path.join(d, r)), f"{rel}: {r} does not exist")
            elif os.path.basename(d) == "base":
                for doc in docs:
                    validate(doc, rel)
    print(f"ok: {n} YAML files parse; base manifests valid ({', '.join(K8S_VERSIONS)})")


def check_rendered(repo, name, path):
    docs = [x for x in yaml.safe_load_all(open(path)) if x is not None]
    check(docs, f"{name}: nothing rendered")
    for doc in docs:
        validate(doc, name)
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    check(len(by_kind.get("Namespace", [])) == 1, f"{name}: one Namespace")
    sets = by_kind.get("StatefulSet", [])
    check(sets, f"{name}: no StatefulSet")
    known_vars = entrypoint_vars(repo)
    uid = containerfile_uid(repo)
    seeds_expected = set()
    dcs = set()
    for sts in sets:
        sname = sts["metadata"]["name"]
        where = f"{name}: StatefulSet {sname}"
        spec = sts["spec"]
        pod = spec["template"]
        labels = pod["metadata"]["labels"]
        check(matches(spec["selector"]["matchLabels"], labels), f"{where}: selector does not match its pod labels")
        # Headless seed service.
        svc = named.get(("Service", spec["serviceName"]))
        check(svc, f"{where}: serviceName {spec['serviceName']} is not a Service here")
        check(svc["spec"].get("clusterIP") == "None", f"{where}: {spec['serviceName']} is not headless")
        check(svc["spec"].get("publishNotReadyAddresses") is True,
              f"{where}: seeds must be in DNS before they are ready (publishNotReadyAddresses)")
        check(matches(svc["spec"]["selector"], labels), f"{where}: seed Service selector does not match")
        seeds_expected.add(f"{sname}-0.{spec['serviceName']}")
        # Pods of other StatefulSets must not match this selector.
        for other in sets:
            if other is not sts:
                check(not matches(spec["selector"]["matchLabels"], other["spec"]["template"]["metadata"]["labels"]),
                      f"{where}: its selector also matches {other['metadata']['name']}'s pods")
        # Client service and PDB of this datacenter.
        clients = [s for s in by_kind.get("Service", [])
                   if s["spec"].get("clusterIP") != "None" and matches(s["spec"]["selector"], labels)]
        check(len(clients) == 1, f"{where}: one client Service selects its pods ({len(clients)})")
        check([p["port"] for p in clients[0]["spec"]["ports"]] == [9042], f"{where}: client Service serves CQL 9042")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", []) if matches(p["spec"]["selector"]["matchLabels"], labels)]
        check(len(pdbs) == 1, f"{where}: one PodDisruptionBudget selects its pods")
        check(pdbs[0]["spec"].get("maxUnavailable") == 1, f"{where}: PDB maxUnavailable must be 1")
        # Scheduling: one pod per machine.
        anti = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        check(any(t["topologyKey"] == "kubernetes.io/hostname" and matches(t["labelSelector"]["matchLabels"], labels)
                  for t in anti), f"{where}: no anti-affinity across machines for its own pods")
        # The container.
        sc = pod["spec"]["securityContext"]
        check(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == uid and sc.get("fsGroup") == uid,
              f"{where}: must run as the image's uid {uid}, non-root, with fsGroup {uid}")
        (c,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        check(ports == {"internode": 7000, "cql": 9042, "admin": 9180}, f"{where}: ports {ports}")
        for s in [svc] + clients:
            for p in s["spec"]["ports"]:
                check(p["targetPort"] in ports and ports[p["targetPort"]] == p["port"],
                      f"{where}: Service {s['metadata']['name']} port {p} does not reach the container")
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"]:
            h = c.get(probe, {}).get("httpGet")
            check(h and h["path"] == "/status" and ports.get(h["port"], h["port"]) == 9180,
                  f"{where}: {probe} must GET /status on the admin port")
        pre = c["lifecycle"]["preStop"]["exec"]["command"]
        check("kill -TERM 1" in " ".join(pre), f"{where}: preStop must stop the node with SIGTERM")
        check(pod["spec"].get("terminationGracePeriodSeconds", 30) >= 60, f"{where}: give the flush time")
        res = c["resources"]
        check(res["requests"].get("cpu") and res["requests"].get("memory") and res["limits"].get("memory"),
              f"{where}: resource requests and a memory limit")
        csc = c["securityContext"]
        check(csc.get("allowPrivilegeEscalation") is False and csc["capabilities"]["drop"] == ["ALL"],
              f"{where}: no privilege escalation, no capabilities")
        # Data on the claim, at the image's volume.
        (claim,) = spec["volumeClaimTemplates"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        check(mounts.get(claim["metadata"]["name"]) == "/var/lib/gyre", f"{where}: the claim is not at /var/lib/gyre")
        # Environment: only what the entrypoint reads.
        env = {e["name"]: e for e in c.get("env", [])}
        check(env.get("GYRE_LISTEN_ADDRESS", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP",
              f"{where}: GYRE_LISTEN_ADDRESS must be the pod IP")
        config = {}
        for ef in c.get("envFrom", []):
            cm = named.get(("ConfigMap", ef["configMapRef"]["name"]))
            check(cm, f"{where}: envFrom names a missing ConfigMap {ef['configMapRef']['name']}")
            config.update(cm["data"])
        for var in list(env) + list(config):
            check(var in known_vars, f"{where}: {var} is not read by deploy/container/entrypoint.sh ({sorted(known_vars)})")
        for var in ["GYRE_CLUSTER_NAME", "GYRE_SEEDS", "GYRE_DATACENTER"]:
            check(config.get(var), f"{where}: {var} not set")
        dc = config["GYRE_DATACENTER"]
        check(labels.get("gyre.io/datacenter") == dc, f"{where}: label gyre.io/datacenter != GYRE_DATACENTER {dc}")
        check(dc not in dcs, f"{where}: datacenter {dc} twice")
        dcs.add(dc)
        sts["_seeds"] = set(s.strip() for s in config["GYRE_SEEDS"].split(","))
    for sts in sets:
        check(sts["_seeds"] == seeds_expected,
              f"{name}: StatefulSet {sts['metadata']['name']} seeds {sorted(sts['_seeds'])}, "
              f"expected pod 0 of every StatefulSet {sorted(seeds_expected)}")
    # Negative control: the validator does reject an unknown field.
    bad = copy.deepcopy(sets[0])
    bad.pop("_seeds", None)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    try:
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)
        fail("kubernetes-validate accepted an unknown field: the schema check checks nothing")
    except kubernetes_validate.ValidationError:
        pass
    print(f"ok: {name}: {len(docs)} resources valid; datacenters {sorted(dcs)}; seeds {sorted(seeds_expected)}")


def main():
    repo = sys.argv[1]
    check_files(repo)
    for arg in sys.argv[2:]:
        name, path = arg.split("=", 1)
        check_rendered(repo, name, path)


if __name__ == "__main__":
    main()
