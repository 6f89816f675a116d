"""infra/ checked without Azure.

- checkov (Bicep, Dockerfile, Kubernetes YAML), shellcheck and hadolint from the tool venv .venv-infra
  (requirements-infra.txt); every skipped check must carry its reason.
- The names and settings that Bicep, the Functions code (function_app/settings.py), the components,
  the AML environment, the instance types and the image must share.
- infra/deploy.sh and infra/teardown.sh run for real against a recording fake of the Azure CLI,
  kubectl, kubelogin and func (the only fake: the Azure control plane), which answers like Azure
  and logs every call, so the tests assert the commands that would have been sent.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import fields
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from function_app.settings import STORAGE_CONNECTION, Settings, setting_name, setting_names

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
TOOLS = REPO / ".venv-infra" / "bin"
INSTALL_TOOLS = "python3 -m venv .venv-infra && .venv-infra/bin/pip install -r requirements-infra.txt"

# App settings that belong to the Functions runtime, not to our code (the only names Bicep may set
# beyond setting_names()). FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION are listed for
# completeness: on Flex Consumption they live in functionAppConfig instead.
FUNCTIONS_RUNTIME_SETTINGS = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
}
IDENTITY_STORAGE_KEYS = {f"{STORAGE_CONNECTION}__{s}" for s in ("blobServiceUri", "queueServiceUri", "tableServiceUri")}
BICEP_FILES = sorted(p.relative_to(REPO).as_posix() for p in INFRA.rglob("*.bicep"))


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: install the infra tools with `{INSTALL_TOOLS}`")
    return str(path)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, **kwargs)


# ---------------------------------------------------------------- static analysis (tool venv)

@pytest.fixture(scope="module")
def checkov_reports() -> dict[str, dict]:
    """checkov over infra/ (Bicep, Kubernetes YAML) and the Dockerfile, run side by side: {framework: report}."""
    checkov = [tool("checkov"), "--output", "json", "--skip-download"]
    scans = [subprocess.Popen([*checkov, *target], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
             for target in (["-d", "infra", "--framework", "bicep", "kubernetes"],
                            ["-f", "aks_jobs/Dockerfile", "--framework", "dockerfile"])]
    reports = []
    for scan in scans:
        out, err = scan.communicate(timeout=300)
        try:
            found = json.loads(out)
        except json.JSONDecodeError:
            pytest.fail(f"checkov {scan.args[4:]} gave no JSON report:\n{err[-3000:]}")
        reports += found if isinstance(found, list) else [found]
    return {r["check_type"]: r for r in reports if "check_type" in r}


@pytest.mark.parametrize("framework, min_passed", [("bicep", 30), ("dockerfile", 30)])
def test_checkov_passes_with_every_skip_justified(checkov_reports, framework, min_passed):
    report = checkov_reports.get(framework)
    assert report is not None, f"checkov produced no {framework} report: {sorted(checkov_reports)}"
    summary, results = report["summary"], report["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in results["failed_checks"]]
    assert not failed, f"checkov {framework} failures:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= min_passed, f"checkov checked too little: {summary}"
    unjustified = [c["check_id"] for c in results["skipped_checks"]
                   if len((c["check_result"].get("suppress_comment") or "").strip()) < 20]
    assert not unjustified, f"skipped without a reason next to the resource: {unjustified}"


def test_checkov_covers_every_bicep_file_and_the_key_resources(checkov_reports):
    results = checkov_reports["bicep"]["results"]
    checked = results["passed_checks"] + results["skipped_checks"]
    files = {c["file_path"].lstrip("/") for c in checked}
    types = {c["resource"].rsplit(".", 1)[0] for c in checked}
    for module in ("modules/storage.bicep", "modules/functionapp.bicep", "modules/aml.bicep", "modules/aks.bicep"):
        assert module in files, f"checkov did not evaluate {module}"
    for resource_type in ("Microsoft.Storage/storageAccounts", "Microsoft.Web/sites",
                          "Microsoft.ContainerService/managedClusters", "Microsoft.KeyVault/vaults",
                          "Microsoft.ContainerRegistry/registries", "Microsoft.MachineLearningServices/workspaces"):
        assert resource_type in types


def test_checkov_finds_nothing_in_any_framework(checkov_reports):
    # infra/k8s holds only AML InstanceType custom resources, which no checkov Kubernetes check
    # covers; a workload manifest added there would be checked and must pass too.
    assert checkov_reports
    for framework, report in checkov_reports.items():
        assert report["summary"]["parsing_errors"] == 0, framework
        assert not report["results"]["failed_checks"], framework


def test_deploy_scripts_pass_shellcheck():
    result = run([tool("shellcheck"), "--severity=style", "infra/deploy.sh", "infra/teardown.sh"], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint():
    result = run([tool("hadolint"), "aks_jobs/Dockerfile"], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- Bicep, parsed by checkov's parser

@pytest.fixture(scope="module")
def bicep() -> dict[str, dict]:
    """{path: template as JSON} via pycep (the parser checkov uses); a syntax error fails here."""
    script = ("import json, sys\nfrom pathlib import Path\nfrom pycep import BicepParser\n"
              "parser = BicepParser()\n"
              "print(json.dumps({f: parser.parse(file_path=Path(f)) for f in sys.argv[1:]}, default=str))\n")
    result = run([tool("python"), "-c", script, *BICEP_FILES], cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def main_param_default(bicep, name: str):
    return bicep["infra/main.bicep"]["parameters"][name].get("default")


def code_settings(bicep) -> dict:
    return bicep["infra/main.bicep"]["variables"]["functionAppSettings"]["value"]


def runtime_settings(bicep) -> dict:
    return bicep["infra/modules/functionapp.bicep"]["variables"]["runtimeSettings"]["value"]


def referenced_param(bicep, value) -> str | None:
    """The main.bicep parameter a setting's value is (`name` or `string(name)`), else None."""
    params = bicep["infra/main.bicep"]["parameters"]
    if isinstance(value, dict) and value.get("function", {}).get("type") == "string":
        value = value["function"]["parameters"]["value_to_convert"]
    return value if isinstance(value, str) and value in params else None


def test_every_setting_the_code_reads_is_an_app_setting(bicep):
    expected = (set(setting_names()) - {STORAGE_CONNECTION}) | IDENTITY_STORAGE_KEYS
    in_bicep = set(code_settings(bicep))
    assert not expected - in_bicep, f"read by function_app but not set in Bicep: {sorted(expected - in_bicep)}"
    assert not in_bicep - expected, f"set in Bicep but never read by function_app: {sorted(in_bicep - expected)}"


def test_only_runtime_settings_are_added_and_all_reach_the_app(bicep):
    runtime = set(runtime_settings(bicep))
    assert runtime <= FUNCTIONS_RUNTIME_SETTINGS, sorted(runtime - FUNCTIONS_RUNTIME_SETTINGS)
    assert not runtime & set(code_settings(bicep))
    # Identity-based host storage: no AzureWebJobsStorage connection string on a shared-key-less account.
    assert "AzureWebJobsStorage" not in runtime and STORAGE_CONNECTION not in code_settings(bicep)
    site = bicep["infra/modules/functionapp.bicep"]["resources"]["functionApp"]["config"]
    app_settings = json.dumps(site["properties"]["siteConfig"]["appSettings"])
    assert "runtimeSettings" in app_settings and "codeSettings" in app_settings
    module = bicep["infra/main.bicep"]["modules"]["functionApp"]["config"]
    assert module["params"]["codeSettings"] == "functionAppSettings"


def test_azure_values_of_the_settings(bicep):
    values = code_settings(bicep)
    assert values["PIPELINE_BACKEND"] == "aml"
    for key in IDENTITY_STORAGE_KEYS:
        assert "storage" in json.dumps(values[key]) and "Endpoint" in json.dumps(values[key])


def test_bicep_defaults_equal_the_code_defaults(bicep):
    defaults = {setting_name(f.name): f.default for f in fields(Settings)}
    compared = []
    for key, value in code_settings(bicep).items():
        param = referenced_param(bicep, value)
        # An empty code default means "set it for your environment" (subscription, workspace, ...).
        if param is None or defaults.get(key, "") == "":
            continue
        assert str(main_param_default(bicep, param)) == str(defaults[key]), (key, param)
        compared.append(key)
    assert {"DATA_CONTAINER", "STATUS_TABLE", "AML_COMPUTE", "AML_CPU_INSTANCE_TYPE", "AML_GPU_INSTANCE_TYPE",
            "AML_DATASTORE", "AML_ENDPOINT_NAME", "MODEL_NAME"} <= set(compared)


def test_parameters_file_names_only_real_parameters(bicep):
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    unknown = set(params) - set(bicep["infra/main.bicep"]["parameters"])
    assert not unknown, f"main.parameters.json sets parameters main.bicep does not declare: {sorted(unknown)}"


def test_storage_is_private_identity_only_and_tls12(bicep):
    account = bicep["infra/modules/storage.bicep"]["resources"]["account"]["config"]["properties"]
    assert account["allowSharedKeyAccess"] is False
    assert account["allowBlobPublicAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"
    containers = {n: r["config"] for n, r in bicep["infra/modules/storage.bicep"]["resources"].items()
                  if r["type"].endswith("/containers")}
    assert all(c["properties"]["publicAccess"] == "None" for c in containers.values())


def test_compute_identity_writes_only_processed(bicep):
    roles = bicep["infra/modules/roles.bicep"]
    writer = roles["resources"]["computeSnapshotWriter"]["config"]["properties"]
    assert writer["condition"] == "processedOnlyCondition" and writer["conditionVersion"] == "2.0"
    condition = roles["variables"]["processedOnlyCondition"]["value"].replace("\\'", "'")
    for action in ("blobWriteAction", "blobAddAction", "blobDeleteAction"):
        assert f"${{{action}}}" in condition
    assert "StringStartsWith '${processedPrefix}'" in condition
    assert bicep["infra/main.bicep"]["modules"]["roles"]["config"]["params"]["processedPrefix"] == "processedPrefix"
    assert bicep["infra/main.bicep"]["variables"]["processedPrefix"]["value"] == "processed/"


# ---------------------------------------------------------------- AKS pools and AML instance types

def quantity(value) -> float:
    """Kubernetes CPU/memory quantity as a number (cores or bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.fixture(scope="module")
def instance_types() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((INFRA / "k8s" / "instance-types.yaml").read_text()) if d]
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) == ("amlarc.azureml.com/v1alpha1", "InstanceType")
    return {d["metadata"]["name"]: d["spec"] for d in docs}


def pools(bicep) -> dict[str, dict]:
    cluster = bicep["infra/modules/aks.bicep"]["resources"]["cluster"]["config"]
    return {p["name"]: p for p in cluster["properties"]["agentPoolProfiles"]}


def test_instance_type_names_are_the_code_defaults(bicep, instance_types):
    defaults = Settings()
    assert set(instance_types) == {"defaultinstancetype", defaults.aml_cpu_instance_type, defaults.aml_gpu_instance_type}
    assert main_param_default(bicep, "cpuInstanceType") == defaults.aml_cpu_instance_type
    assert main_param_default(bicep, "gpuInstanceType") == defaults.aml_gpu_instance_type
    # A step submitted without an instance type gets the CPU type, not AML's tiny built-in default.
    assert instance_types["defaultinstancetype"] == instance_types[defaults.aml_cpu_instance_type]


def test_gpu_type_lands_on_the_tainted_scale_to_zero_gpu_pool(bicep, instance_types):
    defaults = Settings()
    gpu, cpu = instance_types[defaults.aml_gpu_instance_type], instance_types[defaults.aml_cpu_instance_type]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    labels = {name: {k.strip("'"): v for k, v in p["nodeLabels"].items()} for name, p in pools(bicep).items()}
    assert cpu["nodeSelector"].items() <= labels["system"].items()
    assert gpu["nodeSelector"].items() <= labels["gpu"].items()
    gpu_pool = pools(bicep)["gpu"]
    assert gpu_pool["enableAutoScaling"] is True and gpu_pool["minCount"] == 0 and gpu_pool["count"] == 0
    aks_vars = bicep["infra/modules/aks.bicep"]["variables"]
    taints = [aks_vars[t]["value"] if t in aks_vars else t for t in gpu_pool["nodeTaints"]]
    assert taints == ["nvidia.com/gpu=present:NoSchedule"]
    assert "nodeTaints" not in pools(bicep)["system"]


def test_instance_type_requests_fit_their_limits(instance_types):
    for name, spec in instance_types.items():
        requests, limits = spec["resources"]["requests"], spec["resources"]["limits"]
        for resource in ("cpu", "memory"):
            assert 0 < quantity(requests[resource]) <= quantity(limits[resource]), (name, resource)


# ---------------------------------------------------------------- AML names shared with the components

def component_environments() -> set[str]:
    return {yaml.safe_load(p.read_text())["environment"] for p in (REPO / "aks_jobs" / "components").glob("*.yml")}


def test_components_use_the_registered_environment():
    from azure.ai.ml import load_environment

    env = load_environment(REPO / "aks_jobs" / "environment.yml",
                           params_override=[{"image": "example.azurecr.io/gpt2-pdf-jobs:abc"}])
    assert component_environments() == {f"azureml:{env.name}@latest"}
    assert env.image == "example.azurecr.io/gpt2-pdf-jobs:abc"
    routes = env.inference_config
    assert routes["scoringRoute"] == {"port": 5001, "path": "/score"}
    assert routes["livenessRoute"]["port"] == routes["readinessRoute"]["port"] == 5001
    deploy = (INFRA / "deploy.sh").read_text()
    assert f'IMAGE_REPOSITORY="${{IMAGE_REPOSITORY:-{env.name}}}"' in deploy


def test_component_defaults_and_aml_names_agree(bicep):
    defaults = Settings()
    evaluate = yaml.safe_load((REPO / "aks_jobs" / "components" / "evaluate.yml").read_text())
    train = yaml.safe_load((REPO / "aks_jobs" / "components" / "train.yml").read_text())
    assert evaluate["inputs"]["model_name"]["default"] == defaults.model_name == main_param_default(bicep, "modelName")
    assert train["inputs"]["base_model"]["default"] == defaults.base_model
    assert re.fullmatch(r"[a-zA-Z](?![a-zA-Z0-9-]*-\d+$)[a-zA-Z0-9\-]{2,23}", defaults.aml_compute)
    assert re.fullmatch(r"[A-Za-z0-9_]+", defaults.aml_datastore)
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]", defaults.aml_endpoint_name)
    assert re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", defaults.data_container)
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", defaults.status_table)


# ---------------------------------------------------------------- the image

def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in (REPO / "aks_jobs" / "Dockerfile").read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip().removesuffix("\\") + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", line), f"{path.name}: not pinned: {line!r}"
        name, version = line.split("==")
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_image_installs_only_pinned_requirements():
    instructions = dockerfile_instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert len(froms) == 1 and froms[0].startswith("python:3.11-slim"), froms
    copies = {arg.split()[-1]: arg.split()[-2] for op, arg in instructions if op == "COPY"}
    assert copies["/tmp/requirements.txt"] == "aks_jobs/requirements.txt"
    assert copies["/tmp/constraints.txt"] == "constraints.txt"
    installs = [segment for op, arg in instructions if op == "RUN"
                for segment in arg.split("&&") if "pip install" in segment]
    assert installs, "the Dockerfile installs nothing"
    for segment in installs:
        words = shlex.split(segment)
        args = words[words.index("install") + 1:]
        assert "--no-cache-dir" in args
        packages = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] not in ("-r", "-c")]
        assert not packages, f"installs unpinned packages: {packages}"
        assert args[args.index("-r") + 1] == "/tmp/requirements.txt" and args[args.index("-c") + 1] == "/tmp/constraints.txt"
    pins = requirement_pins(REPO / "aks_jobs" / "requirements.txt")
    locked = requirement_pins(REPO / "constraints.txt")
    assert {"torch", "transformers", "azureml-inference-server-http", "pypdf"} <= set(pins)
    mismatched = {n: (v, locked.get(n)) for n, v in pins.items() if locked.get(n) != v}
    assert not mismatched, f"aks_jobs/requirements.txt disagrees with constraints.txt: {mismatched}"


def test_image_runs_as_non_root_and_serves_azmlinfsrv():
    instructions = dockerfile_instructions()
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    last_user = max(i for i, (op, _) in enumerate(instructions) if op == "USER")
    assert not [op for op, _ in instructions[last_user:] if op == "RUN"], "RUN after USER runs as the app user"
    env = " ".join(arg for op, arg in instructions if op == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "HF_HOME=" in env
    cmd = json.loads([arg for op, arg in instructions if op == "CMD"][-1])
    assert "azmlinfsrv --entry_script" in cmd[-1]
    copied = [arg.split()[-2] for op, arg in instructions if op == "COPY"]
    assert "aks_jobs/" in copied and all((REPO / src).exists() for src in copied)


# ---------------------------------------------------------------- files other parts must provide

def test_local_settings_sample_lists_every_setting():
    sample = REPO / "local.settings.sample.json"
    assert sample.exists(), "local.settings.sample.json is missing at the repo root"
    values = json.loads(sample.read_text())["Values"]
    missing = set(setting_names()) - set(values)
    assert not missing, f"local.settings.sample.json lacks settings the code reads: {sorted(missing)}"


def test_funcignore_keeps_the_published_package_small():
    funcignore = REPO / ".funcignore"
    assert funcignore.exists(), ".funcignore is missing: `func azure functionapp publish` would upload .venv"
    patterns = [p.strip().strip("/") for p in funcignore.read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(name: str) -> bool:
        return any(fnmatch(name, p) for p in patterns)

    for heavy in (".venv", ".venv-infra", "node_modules", ".local", ".git"):
        assert ignored(heavy), f".funcignore must exclude {heavy}"
    # The control plane loads the component YAML and uploads aks_jobs/ as job and scoring code.
    for needed in ("function_app", "function_app.py", "host.json", "requirements.txt", "aks_jobs"):
        assert not ignored(needed), f".funcignore must keep {needed}"


# ---------------------------------------------------------------- deploy.sh / teardown.sh vs fake Azure

FAKE_AZURE = r'''
import json, os, sys
from pathlib import Path

tool, args = sys.argv[1], sys.argv[2:]
scenario = json.loads(Path(os.environ["FAKE_AZURE_SCENARIO"]).read_text())
record = {"tool": tool, "args": args, "cwd": os.getcwd()}


def opt(name):
    return args[args.index(name) + 1] if name in args else None


def reply(text="", code=0):
    with open(os.environ["FAKE_AZURE_LOG"], "a") as log:
        log.write(json.dumps(record) + "\n")
    if text:
        print(text)
    sys.exit(code)


def starts(*words):
    return args[: len(words)] == list(words)


if tool in ("kubelogin", "func"):
    reply()
if tool == "kubectl":
    reply("\n".join(scenario["instance_types"]) if "get" in args else "")
if starts("account", "show"):
    reply({"user.type": "user", "user.name": "deployer@example.com"}[opt("--query")])
if starts("ad", "signed-in-user", "show"):
    reply(scenario["deployer_id"])
if starts("extension", "show") or starts("provider", "register") or starts("group", "create"):
    reply()
if starts("group", "show"):
    reply("", 0 if scenario["group_exists"] else 3)
if starts("deployment", "group", "create"):
    reply()
if starts("deployment", "group", "show"):
    name = opt("--query").split(".")[2]
    reply(scenario["outputs"][name])
if starts("acr", "build"):
    context = Path(args[-1])
    record["context_files"] = sorted(p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file())
    reply()
if starts("ml", "environment", "show"):
    reply("", 1)
if starts("ml", "environment", "create") or starts("ml", "workspace", "delete") or starts("group", "delete"):
    reply()
if starts("aks", "get-credentials"):
    Path(opt("--file")).write_text("apiVersion: v1\nkind: Config\n")
    reply()
if starts("functionapp", "show"):
    reply(scenario["host"])
if starts("functionapp", "function", "list"):
    reply("\n".join(scenario["blob_functions"]))
if starts("functionapp", "keys", "list"):
    reply(scenario["eventgrid_extension_key"])
if starts("eventgrid", "system-topic", "event-subscription", "create"):
    reply()
if starts("resource", "list"):
    reply(scenario["outputs"]["workspaceName"])
record["unmodelled"] = True
reply("fake Azure: no answer for this call", 2)
'''

# Everything deploy.sh / teardown.sh read from the environment: the tests set these explicitly.
DEPLOY_ENV = {"RESOURCE_GROUP", "LOCATION", "SUBSCRIPTION", "PARAMETERS_FILE", "IMAGE_TAG", "STEPS",
              "DEPLOYMENT_NAME", "IMAGE_REPOSITORY", "TORCH_INDEX_URL", "DEPLOYER_PRINCIPAL_ID",
              "DEPLOYER_PRINCIPAL_TYPE", "BLOB_FUNCTION_NAME", "EVENT_SUBSCRIPTION_NAME"}

OUTPUTS = {
    "functionAppName": "gpt2pdf-func-abc123",
    "storageAccountName": "stgpt2pdfdataabc123",
    "dataContainerName": "gpt2-training-data",
    "inputsPrefix": "inputs/",
    "systemTopicName": "gpt2pdf-egst-abc123",
    "workspaceName": "gpt2pdf-mlw-abc123",
    "registryName": "acrgpt2pdfabc123",
    "registryLoginServer": "acrgpt2pdfabc123.azurecr.io",
    "clusterName": "gpt2pdf-aks-abc123",
}


@pytest.fixture
def fake_azure(tmp_path):
    """A copy of the deployable files (plus a decoy .venv) and a PATH whose az/kubectl/kubelogin/func
    record each call and answer from `scenario`."""
    checkout = tmp_path / "checkout"
    for part in ("infra", "aks_jobs"):
        shutil.copytree(REPO / part, checkout / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "constraints.txt", checkout / "constraints.txt")
    (checkout / ".funcignore").write_text(".venv*\nnode_modules\n")
    (checkout / ".venv" / "lib").mkdir(parents=True)
    (checkout / ".venv" / "lib" / "big.bin").write_bytes(b"\0" * 1024)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fake_azure.py"
    fake.write_text(FAKE_AZURE)
    for name in ("az", "kubectl", "kubelogin", "func"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" {name} "$@"\n')
        wrapper.chmod(0o755)

    scenario = {
        "group_exists": False,
        "deployer_id": "11111111-2222-3333-4444-555555555555",
        "outputs": OUTPUTS,
        "instance_types": ["defaultinstancetype", "cpu-small", "gpu-t4"],
        "host": "gpt2pdf-func-abc123.azurewebsites.net",
        "blob_functions": ["gpt2pdf-func-abc123/follow_uploads"],
        "eventgrid_extension_key": "fake-eventgrid-extension-key",
    }

    class Fake:
        root = checkout
        log = tmp_path / "calls.jsonl"
        answers = scenario  # tests edit this before .run()

        def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
            scenario_file = tmp_path / "scenario.json"
            scenario_file.write_text(json.dumps(self.answers))
            self.log.unlink(missing_ok=True)
            environ = {k: v for k, v in os.environ.items() if k not in DEPLOY_ENV}
            environ.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_AZURE_LOG=str(self.log),
                           FAKE_AZURE_SCENARIO=str(scenario_file), **env)
            return run(["bash", str(checkout / "infra" / script), *args], env=environ, cwd=tmp_path)

        def calls(self) -> list[dict]:
            return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    return Fake()


def find(calls: list[dict], tool: str, *prefix: str) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(calls) if c["tool"] == tool and c["args"][: len(prefix)] == list(prefix)]


def one(calls: list[dict], tool: str, *prefix: str) -> tuple[int, dict]:
    found = find(calls, tool, *prefix)
    assert len(found) == 1, f"expected one `{tool} {' '.join(prefix)}`, got {len(found)}"
    return found[0]


def arg(call: dict, name: str) -> str:
    return call["args"][call["args"].index(name) + 1]


def args_after(call: dict, name: str) -> list[str]:
    """Every value of a multi-valued option (up to the next --option)."""
    rest = call["args"][call["args"].index(name) + 1:]
    return rest[: next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]


def test_deploy_runs_every_step_in_order_with_the_right_arguments(fake_azure):
    result = fake_azure.run("deploy.sh", "-g", "rg-gpt2", "-l", "westeurope", "--set", "gpuPoolMaxCount=2",
                            IMAGE_TAG="v42")
    calls = fake_azure.calls()
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [c for c in calls if c.get("unmodelled")]
    root = fake_azure.root

    i_group, _ = one(calls, "az", "group", "create")
    i_infra, infra = one(calls, "az", "deployment", "group", "create")
    assert arg(infra, "--template-file") == str(root / "infra" / "main.bicep")
    assert f"@{REPO / 'infra' / 'main.parameters.json'}" not in infra["args"]
    assert f"@{root / 'infra' / 'main.parameters.json'}" in infra["args"]
    assert "deployerPrincipalId=11111111-2222-3333-4444-555555555555" in infra["args"]
    assert "deployerPrincipalType=User" in infra["args"] and "gpuPoolMaxCount=2" in infra["args"]

    i_image, build = one(calls, "az", "acr", "build")
    assert arg(build, "--registry") == OUTPUTS["registryName"]
    assert arg(build, "--image") == "gpt2-pdf-jobs:v42"
    assert arg(build, "--file") == "aks_jobs/Dockerfile"
    # Only what the Dockerfile copies is uploaded: aks_jobs/ and constraints.txt, not the decoy .venv.
    files = build["context_files"]
    assert "aks_jobs/Dockerfile" in files and "constraints.txt" in files and "aks_jobs/requirements.txt" in files
    assert all(f == "constraints.txt" or f.startswith("aks_jobs/") for f in files), files
    assert not [f for f in files if "__pycache__" in f]

    i_env, env = one(calls, "az", "ml", "environment", "create")
    assert arg(env, "--file") == str(root / "aks_jobs" / "environment.yml")
    assert arg(env, "--set") == f"image={OUTPUTS['registryLoginServer']}/gpt2-pdf-jobs:v42"
    assert arg(env, "--version") == "v42" and arg(env, "--workspace-name") == OUTPUTS["workspaceName"]

    i_creds, creds = one(calls, "az", "aks", "get-credentials")
    assert arg(creds, "--name") == OUTPUTS["clusterName"]
    i_login, login = one(calls, "kubelogin", "convert-kubeconfig")
    assert arg(login, "--kubeconfig") == arg(creds, "--file")
    applies = [(i, c) for i, c in find(calls, "kubectl") if "apply" in c["args"]]
    assert len(applies) == 1
    i_apply, apply = applies[0]
    assert arg(apply, "-f") == str(root / "infra" / "k8s" / "instance-types.yaml")
    assert arg(apply, "--kubeconfig") == arg(creds, "--file")

    i_publish, publish = one(calls, "func", "azure", "functionapp", "publish")
    assert publish["args"][3] == OUTPUTS["functionAppName"] and publish["cwd"] == str(root)

    i_events, sub = one(calls, "az", "eventgrid", "system-topic", "event-subscription", "create")
    assert arg(sub, "--system-topic-name") == OUTPUTS["systemTopicName"]
    assert arg(sub, "--endpoint-type") == "webhook"
    # The Event Grid trigger's webhook (learn.microsoft.com azure-functions/event-grid-how-tos: "Webhook endpoint
    # URL" .../runtime/webhooks/eventgrid?functionName={functionname}&code={systemkey}, key eventgrid_extension).
    assert arg(sub, "--endpoint") == ("https://gpt2pdf-func-abc123.azurewebsites.net/runtime/webhooks/eventgrid"
                                      "?functionName=follow_uploads&code=fake-eventgrid-extension-key")
    assert args_after(sub, "--included-event-types") == ["Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"]
    assert arg(sub, "--subject-begins-with") == "/blobServices/default/containers/gpt2-training-data/blobs/inputs/"

    assert i_group < i_infra < i_image < i_env < i_creds < i_login < i_apply < i_publish < i_events
    # The webhook key is a secret: it goes to az, never to the console.
    assert "fake-eventgrid-extension-key" not in result.stdout + result.stderr


def test_deploy_can_rerun_single_steps_against_an_existing_group(fake_azure):
    fake_azure.answers["group_exists"] = True
    result = fake_azure.run("deploy.sh", "--resource-group", "rg-gpt2", "--steps", "k8s,events", IMAGE_TAG="v42")
    assert result.returncode == 0, result.stderr[-3000:]
    calls = fake_azure.calls()
    assert not find(calls, "az", "deployment", "group", "create") and not find(calls, "az", "acr", "build")
    assert not find(calls, "func") and find(calls, "kubectl")
    one(calls, "az", "eventgrid", "system-topic", "event-subscription", "create")


@pytest.mark.parametrize("args, message", [
    ((), "no resource group"),
    (("-g", "rg-gpt2", "--steps", "infra,magic"), "unknown step 'magic'"),
    (("-g", "rg-gpt2", "--steps", "infra"), "does not exist: pass -l REGION"),
])
def test_deploy_refuses_bad_input_with_a_clear_message(fake_azure, args, message):
    result = fake_azure.run("deploy.sh", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert not find(fake_azure.calls(), "az", "deployment", "group", "create")


def test_deploy_stops_when_the_blob_function_is_ambiguous(fake_azure):
    fake_azure.answers["group_exists"] = True
    fake_azure.answers["blob_functions"] = ["app/follow_uploads", "app/other_upload"]
    result = fake_azure.run("deploy.sh", "-g", "rg-gpt2", "--steps", "events")
    assert result.returncode != 0 and "BLOB_FUNCTION_NAME" in result.stderr
    assert not find(fake_azure.calls(), "az", "eventgrid")
    named = fake_azure.run("deploy.sh", "-g", "rg-gpt2", "--steps", "events", BLOB_FUNCTION_NAME="other_upload")
    assert named.returncode == 0, named.stderr[-2000:]
    _, sub = one(fake_azure.calls(), "az", "eventgrid", "system-topic", "event-subscription", "create")
    assert "functionName=other_upload&" in arg(sub, "--endpoint")


def test_teardown_deletes_the_workspace_permanently_then_the_group(fake_azure):
    fake_azure.answers["group_exists"] = True
    result = fake_azure.run("teardown.sh", "-g", "rg-gpt2", "--yes")
    assert result.returncode == 0, result.stderr[-2000:]
    calls = fake_azure.calls()
    i_ws, ws = one(calls, "az", "ml", "workspace", "delete")
    assert arg(ws, "--name") == OUTPUTS["workspaceName"] and "--permanently-delete" in ws["args"]
    i_group, group = one(calls, "az", "group", "delete")
    assert arg(group, "--name") == "rg-gpt2" and i_ws < i_group


def test_teardown_without_confirmation_deletes_nothing(fake_azure):
    fake_azure.answers["group_exists"] = True
    result = fake_azure.run("teardown.sh", "-g", "rg-gpt2")  # stdin is empty: no confirmation
    assert result.returncode != 0
    assert not find(fake_azure.calls(), "az", "group", "delete")
