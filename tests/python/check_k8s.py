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
reads; seeds naming pods 0 and 1 of every StatefulSet through its
headless Service; readiness = `gyre-healthcheck --ready` (the node UN in
its own view, so OrderedReady starts one bootstrap at a time); claims deleted on scale-down
(the decommissioned node's data); the non-root uid of the Containerfile;
where a Secret is mounted (overlays/secure), that every certificate and
key variable names a file of a mounted Secret that holds it, and that
logins, client TLS and internode TLS are all on. Exits non-zero on the
first problem, saying what it is.
"""

import base64
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
            text = open(path).read()
            check("PRIVATE KEY-----" not in text and "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t" not in text
                  and "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0t" not in text,
                  f"{rel}: a private key is committed")
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


TLS_FILES = ["GYRE_CLIENT_CERTIFICATE", "GYRE_CLIENT_PRIVATE_KEY", "GYRE_CLIENT_CA_CERTIFICATE",
             "GYRE_INTERNODE_CERTIFICATE", "GYRE_INTERNODE_PRIVATE_KEY", "GYRE_INTERNODE_CA_CERTIFICATE"]


def check_security(where, named, pod_spec, c, config, overlay):
    # Mounted Secrets: path -> (secret name, its keys).
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    mounted = {}
    for m in c.get("volumeMounts", []):
        v = volumes.get(m["name"])
        if v and "secret" in v:
            sname = v["secret"]["secretName"]
            secret = named.get(("Secret", sname))
            check(secret, f"{where}: mounts Secret {sname}, which is not in the overlay")
            keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
            check(m.get("readOnly") is True, f"{where}: Secret {sname} must be mounted read-only")
            mode = v["secret"].get("defaultMode", 0o644)
            check(mode & 0o007 == 0, f"{where}: Secret {sname} readable by others (defaultMode {oct(mode)})")
            mounted[m["mountPath"].rstrip("/")] = (sname, keys)
    for var in TLS_FILES:
        path = config.get(var)
        if not path:
            continue
        d, _, f = path.rpartition("/")
        check(d in mounted, f"{where}: {var}={path} is not in a mounted Secret ({sorted(mounted)})")
        check(f in mounted[d][1], f"{where}: {var}={path}: Secret {mounted[d][0]} has no key {f}")
    if config.get("GYRE_CLIENT_ENCRYPTION") == "true":
        check(config.get("GYRE_CLIENT_CERTIFICATE") and config.get("GYRE_CLIENT_PRIVATE_KEY"),
              f"{where}: client TLS without a certificate and key")
    if config.get("GYRE_INTERNODE_ENCRYPTION") == "all":
        check(all(config.get(v) for v in TLS_FILES[3:]), f"{where}: internode TLS needs certificate, key and CA")
    for sname, keys in mounted.values():
        secret = named[("Secret", sname)]
        for k, v in secret.get("data", {}).items():
            try:
                text = base64.b64decode(v, validate=True).decode()
            except Exception as e:  # noqa: BLE001 - any decoding failure is the finding
                fail(f"{where}: Secret {sname} key {k} is not base64 text: {e}")
            if overlay == "secure-generated":
                check(text.startswith("-----BEGIN "), f"{where}: Secret {sname} key {k} is not PEM")
    if overlay.startswith("secure"):
        check(mounted, f"{where}: no Secret mounted")
        check(config.get("GYRE_AUTHENTICATOR") == "PasswordAuthenticator", f"{where}: logins are off")
        check(config.get("GYRE_CLIENT_ENCRYPTION") == "true", f"{where}: client TLS is off")
        check(config.get("GYRE_INTERNODE_ENCRYPTION") == "all", f"{where}: internode TLS is off")


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
        if spec.get("replicas", 1) >= 2:
            seeds_expected.add(f"{sname}-1.{spec['serviceName']}")
        check(spec.get("podManagementPolicy") == "OrderedReady", f"{where}: pods must start one at a time")
        check(spec.get("persistentVolumeClaimRetentionPolicy", {}).get("whenScaled") == "Delete",
              f"{where}: a scaled-away (decommissioned) pod's claim must go (whenScaled: Delete)")
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
        for probe in ["startupProbe", "livenessProbe"]:
            h = c.get(probe, {}).get("httpGet")
            check(h and h["path"] == "/status" and ports.get(h["port"], h["port"]) == 9180,
                  f"{where}: {probe} must GET /status on the admin port")
        e = c.get("readinessProbe", {}).get("exec", {}).get("command")
        check(e == ["/usr/local/bin/gyre-healthcheck", "--ready"],
              f"{where}: readinessProbe must be `gyre-healthcheck --ready` (the node UN in its own view)")
        check("--ready" in open(os.path.join(repo, "deploy/container/healthcheck.sh")).read(),
              f"{where}: the image's healthcheck has no --ready")
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
        check_security(where, named, pod["spec"], c, config, name)
        dc = config["GYRE_DATACENTER"]
        check(labels.get("gyre.io/datacenter") == dc, f"{where}: label gyre.io/datacenter != GYRE_DATACENTER {dc}")
        check(dc not in dcs, f"{where}: datacenter {dc} twice")
        dcs.add(dc)
        sts["_seeds"] = set(s.strip() for s in config["GYRE_SEEDS"].split(","))
    for sts in sets:
        check(sts["_seeds"] == seeds_expected,
              f"{name}: StatefulSet {sts['metadata']['name']} seeds {sorted(sts['_seeds'])}, "
              f"expected pods 0 and 1 of every StatefulSet {sorted(seeds_expected)}")
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
