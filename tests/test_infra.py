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

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
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
    scans = [
        subprocess.Popen(
            [*checkov, *target],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for target in (
            ["-d", "infra", "--framework", "bicep", "kubernetes"],
            ["-f", "aks_jobs/Dockerfile", "--framework", "dockerfile"],
        )
    ]
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
    unjustified = [
        c["check_id"]
        for c in results["skipped_checks"]
        if len((c["check_result"].get("suppress_comment") or "").strip()) < 20
    ]
    assert not unjustified, f"skipped without a reason next to the resource: {unjustified}"


def test_checkov_covers_every_bicep_file_and_the_key_resources(checkov_reports):
    results = checkov_reports["bicep"]["results"]
    checked = results["passed_checks"] + results["skipped_checks"]
    files = {c["file_path"].lstrip("/") for c in checked}
    types = {c["resource"].rsplit(".", 1)[0] for c in checked}
    for module in ("modules/storage.bicep", "modules/functionapp.bicep", "modules/aml.bicep", "modules/aks.bicep"):
        assert module in files, f"checkov did not evaluate {module}"
    for resource_type in (
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Web/sites",
        "Microsoft.ContainerService/managedClusters",
        "Microsoft.KeyVault/vaults",
        "Microsoft.ContainerRegistry/registries",
        "Microsoft.MachineLearningServices/workspaces",
    ):
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
    script = (
        "import json, sys\nfrom pathlib import Path\nfrom pycep import BicepParser\n"
        "parser = BicepParser()\n"
        "print(json.dumps({f: parser.parse(file_path=Path(f)) for f in sys.argv[1:]}, default=str))\n"
    )
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
    defaults = {setting_name(name): f.default for name, f in Settings.model_fields.items()}
    compared = []
    for key, value in code_settings(bicep).items():
        param = referenced_param(bicep, value)
        # An empty code default means "set it for your environment" (subscription, workspace, ...).
        if param is None or defaults.get(key) in ("", None):
            continue
        assert str(main_param_default(bicep, param)) == str(defaults[key]), (key, param)
        compared.append(key)
    assert {
        "DATA_CONTAINER",
        "STATUS_TABLE",
        "AML_COMPUTE",
        "AML_CPU_INSTANCE_TYPE",
        "AML_GPU_INSTANCE_TYPE",
        "AML_DATASTORE",
        "AML_ENDPOINT_NAME",
        "MODEL_NAME",
    } <= set(compared)


def test_parameters_file_names_only_real_parameters(bicep):
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    unknown = set(params) - set(bicep["infra/main.bicep"]["parameters"])
    assert not unknown, f"main.parameters.json sets parameters main.bicep does not declare: {sorted(unknown)}"


def test_storage_is_private_identity_only_and_tls12(bicep):
    account = bicep["infra/modules/storage.bicep"]["resources"]["account"]["config"]["properties"]
    assert account["allowSharedKeyAccess"] is False
    assert account["allowBlobPublicAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"
    containers = {
        n: r["config"]
        for n, r in bicep["infra/modules/storage.bicep"]["resources"].items()
        if r["type"].endswith("/containers")
    }
    assert all(c["properties"]["publicAccess"] == "None" for c in containers.values())


def compute_writable_prefixes(bicep) -> set[str]:
    """The prefixes the compute identity's role condition lets it write under, as deployed."""
    roles = bicep["infra/modules/roles.bicep"]
    writer = roles["resources"]["computeSnapshotWriter"]["config"]["properties"]
    assert writer["conditionVersion"] == "2.0"
    condition = roles["variables"][writer["condition"]]["value"].replace("\\'", "'")
    for action in ("blobWriteAction", "blobAddAction", "blobDeleteAction"):
        assert f"${{{action}}}" in condition
    params = bicep["infra/main.bicep"]["modules"]["roles"]["config"]["params"]
    main_vars = bicep["infra/main.bicep"]["variables"]
    return {main_vars[params[param]]["value"] for param in re.findall(r"StringStartsWith '\$\{(\w+)\}'", condition)}


def test_compute_identity_writes_only_where_the_pipeline_writes(bicep):
    # Kubernetes compute jobs write their outputs with the compute's managed identity (ARCHITECTURE.md);
    # the condition and the pipeline builder share function_app/backends/aml_pipeline.py's prefixes.
    from azure.ai.ml import Input

    from function_app.backends import aml_pipeline

    allowed = compute_writable_prefixes(bicep)
    assert allowed and "inputs/" not in allowed  # uploads are never written by jobs
    serving = Input(type="uri_folder", path="azureml://datastores/x/paths/y/")
    job = aml_pipeline.build_pipeline_job(Settings(), "2026-11-30 run/1", serving)
    datastore = aml_pipeline.datastore_uri(Settings().aml_datastore, "")
    bound = [
        (step, name, output["path"])
        for step, node in job._to_dict()["jobs"].items()
        for name, output in node.get("outputs", {}).items()
    ]
    assert {(step, name) for step, name, _ in bound} == {
        ("preprocess", "processed"),
        ("preprocess", "snapshot"),
        ("train", "model"),
        ("evaluate", "evaluation"),
    }
    for step, name, path in bound:
        assert path.startswith(datastore), (step, name, path)
        blob_path = path.removeprefix(datastore)
        assert any(blob_path.startswith(p) for p in allowed), f"{step}.{name} writes {blob_path}, outside {allowed}"
    assert allowed == set(aml_pipeline.COMPUTE_WRITABLE_PREFIXES)


def role_assignments(bicep) -> list[tuple[str, str, str]]:
    """(principal parameter, scope, role) for every role assignment in roles.bicep (loops expanded)."""
    roles = bicep["infra/modules/roles.bicep"]
    found = []
    for resource in roles["resources"].values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource["config"]
        if "loop_type" in config:
            loop = config["loop_type"]["detail"]
            items = [dotted(i) for i in roles["variables"][loop["array_name"]]["value"]]
            config = config["config"]
        else:
            items = [None]
        while "properties" not in config:  # `if (...)` resources nest their body once more
            config = config["config"]
        definition = config["properties"]["roleDefinitionId"]
        for item in items:
            role = definition
            if isinstance(definition, dict) and "function" in definition:
                role = definition["function"]["parameters"]["resource_name_1"]
                role = item if role == loop["item_name"] else dotted(role)
            found.append((config["properties"]["principalId"], json.dumps(config["scope"]), str(dotted(role))))
    return found


def test_the_function_identity_writes_no_blob_of_the_data_account_and_deletes_only_documents_and_text(bicep):
    # The Functions host keeps its state in its own account, so the data account's roles stay least
    # privilege: the control plane reads inputs/ and processed/, deletes a document (inputs/) and its
    # text (processed/: cache entries, snapshots past retention), keeps the status table, and the blob
    # extension writes its poison queue in the triggering blob's account (Azure/azure-sdk-for-net
    # Microsoft.Azure.WebJobs.Extensions.Storage.Blobs, BlobListenerFactory: "poison queue in the same
    # storage account as the triggering blob by default").
    function = bicep["infra/modules/functionapp.bicep"]
    runtime = json.dumps(runtime_settings(bicep)) + json.dumps(
        function["resources"]["functionApp"]["config"]["properties"]["functionAppConfig"]
    )
    assert function["resources"]["account"]["config"]["name"] == "hostStorageAccountName"
    assert "AzureWebJobsStorage__blobServiceUri" in runtime and "account.properties" in runtime
    main = bicep["infra/main.bicep"]["modules"]
    assert (
        dotted(main["functionApp"]["config"]["params"]["hostStorageAccountName"]) == "hostStorage.outputs.accountName"
    )
    assert main["hostStorage"]["config"]["params"]["storageAccountName"] == "hostStorageAccountName"
    assert main_param_default(bicep, "hostStorageAccountName") != main_param_default(bicep, "storageAccountName")
    function_roles = [
        (scope, role) for principal, scope, role in role_assignments(bicep) if principal == "functionPrincipalId"
    ]
    on_data = {role for scope, role in function_roles if "dataAccount" in scope}
    assert on_data == {
        "roleIds.storageBlobDataContributor",
        "roleIds.storageQueueDataContributor",
        "roleIds.storageTableDataContributor",
    }, on_data
    roles = bicep["infra/modules/roles.bicep"]
    deleter = roles["resources"]["functionBlobDeleter"]["config"]["properties"]
    assert deleter["condition"] == "functionDeleteCondition" and deleter["conditionVersion"] == "2.0"
    condition = roles["variables"]["functionDeleteCondition"]["value"].replace("\\'", "'")
    # Everything but write/add/delete passes; delete only under inputs/ and processed/; write and add never.
    denied_unless, allowed = condition.split(") OR (", 1)
    assert all(
        f"!(ActionMatches{{'${{{a}}}'}})" in denied_unless
        for a in ("blobWriteAction", "blobAddAction", "blobDeleteAction")
    )
    assert "blobWriteAction" not in allowed and "blobAddAction" not in allowed
    assert "ActionMatches{'${blobDeleteAction}'} AND" in allowed
    assert {"StringStartsWith '${inputsPrefix}'", "StringStartsWith '${processedPrefix}'"} == set(
        re.findall(r"StringStartsWith '\$\{\w+\}'", allowed)
    )
    on_host = {role for scope, role in function_roles if "hostAccount" in scope}
    assert "roleIds.storageBlobDataOwner" in on_host


def test_the_ui_is_deployed_behind_entra_sign_in_with_a_least_privilege_identity(bicep):
    from ui.settings import env_names

    main = bicep["infra/main.bicep"]
    ui_settings = main["variables"]["uiAppSettings"]["value"]
    assert set(ui_settings) <= set(env_names()), sorted(set(ui_settings) - set(env_names()))
    assert {
        "API_BASE_URL",
        "DataStorage__blobServiceUri",
        "DATA_CONTAINER",
        "AML_SUBSCRIPTION_ID",
        "AML_RESOURCE_GROUP",
        "AML_WORKSPACE",
        "AML_ENDPOINT_NAME",
    } <= set(ui_settings)
    assert "SCORING_KEY" not in ui_settings  # tokens through the identity, never a key that expires
    assert main["modules"]["ui"]["config"]["params"]["uiSettings"] == "uiAppSettings"

    ui = bicep["infra/modules/ui.bicep"]["resources"]
    site = ui["site"]["config"]
    assert site["identity"]["type"] == "SystemAssigned" and site["properties"]["httpsOnly"] is True
    command = shlex.split(site["properties"]["siteConfig"]["appCommandLine"])
    assert command[:4] == ["python", "-m", "streamlit", "run"] and (REPO / command[4]).is_file()
    assert "FUNCTION_KEY" in json.dumps(bicep["infra/modules/ui.bicep"]["variables"]["runtimeSettings"])
    # App Service authentication (authsettingsV2): every request signs in with Microsoft Entra ID.
    auth = ui["auth"]["config"]
    assert auth["name"] == "authsettingsV2" and auth["properties"]["platform"]["enabled"] is True
    validation = auth["properties"]["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "RedirectToLoginPage"
    entra = auth["properties"]["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True and entra["registration"]["clientId"] == "authClientId"

    ui_roles = [(scope, role) for principal, scope, role in role_assignments(bicep) if principal == "uiPrincipalId"]
    assert sorted(role for _, role in ui_roles) == ["roleIds.storageBlobDataContributor", "scoringTokenRole.id"]
    roles = bicep["infra/modules/roles.bicep"]
    uploader = roles["resources"]["uiUploader"]["config"]["properties"]
    assert uploader["condition"] == "uiWriteCondition" and uploader["conditionVersion"] == "2.0"
    condition = roles["variables"]["uiWriteCondition"]["value"].replace("\\'", "'")
    # Everything but write/add/delete passes; write and add only under inputs/; delete never.
    allowed_branch = condition.split(") OR ((", 1)[1]
    assert "blobDeleteAction" not in allowed_branch and "StringStartsWith '${inputsPrefix}'" in allowed_branch
    assert bicep["infra/main.bicep"]["modules"]["roles"]["config"]["params"]["inputsPrefix"] == "inputsPrefix"
    token_role = roles["resources"]["scoringTokenRole"]["config"]["properties"]
    assert token_role["permissions"] == [
        {"actions": ["Microsoft.MachineLearningServices/workspaces/onlineEndpoints/token/action"], "notActions": []}
    ]


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
    assert set(instance_types) == {
        "defaultinstancetype",
        defaults.aml_cpu_instance_type,
        defaults.aml_gpu_instance_type,
    }
    assert main_param_default(bicep, "cpuInstanceType") == defaults.aml_cpu_instance_type
    assert main_param_default(bicep, "gpuInstanceType") == defaults.aml_gpu_instance_type
    # A step submitted without an instance type gets the CPU type, not AML's tiny built-in default.
    assert instance_types["defaultinstancetype"] == instance_types[defaults.aml_cpu_instance_type]


def test_gpu_type_lands_on_the_tainted_gpu_pool(bicep, instance_types):
    defaults = Settings()
    gpu, cpu = instance_types[defaults.aml_gpu_instance_type], instance_types[defaults.aml_cpu_instance_type]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    labels = {name: {k.strip("'"): v for k, v in p["nodeLabels"].items()} for name, p in pools(bicep).items()}
    assert cpu["nodeSelector"].items() <= labels["system"].items()
    assert gpu["nodeSelector"].items() <= labels["gpu"].items()
    gpu_pool = pools(bicep)["gpu"]
    assert gpu_pool["enableAutoScaling"] is True
    aks_vars = bicep["infra/modules/aks.bicep"]["variables"]
    taints = [aks_vars[t]["value"] if t in aks_vars else t for t in gpu_pool["nodeTaints"]]
    assert taints == ["nvidia.com/gpu=present:NoSchedule"]
    assert "nodeTaints" not in pools(bicep)["system"]


def dotted(value) -> str:
    """`a.b.c` from pycep's nested property_accessor shape (plain names stay as they are)."""
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        operands = value["operator"]["operands"]
        return f"{dotted(operands['operand_1'])}.{dotted(operands['operand_2'])}"
    return value


def find_key(tree, key: str) -> dict:
    """The first dict in a parsed Bicep expression that has `key`."""
    if isinstance(tree, dict):
        if key in tree:
            return tree
        for value in tree.values():
            found = find_key(value, key)
            if found is not None:
                return found
    return None


def extension_settings(bicep, exposure: str = "internal") -> dict:
    """The AzureML extension's configurationSettings for a scoringExposure value."""
    aks = bicep["infra/modules/aks.bicep"]
    settings = aks["resources"]["amlExtension"]["config"]["properties"]["configurationSettings"]
    parts = settings["function"]["parameters"].values() if "function" in settings else [settings]
    merged = {}
    for part in parts:
        value = aks["variables"][part]["value"] if isinstance(part, str) else part
        if "operator" in value:  # `cond ? {...} : {...}` (pycep nests it oddly: find the branches)
            branches = find_key(value, "true_value")
            value = branches["true_value"] if exposure == "internal" else branches["false_value"]
        merged.update(value)
    return {k.strip("'"): v for k, v in merged.items()}


EXTENSION_TEMPLATE = json.loads((REPO / "tests" / "data" / "azureml_extension_template.json").read_text())


@pytest.mark.parametrize("exposure", ["internal", "publicTls"])
def test_the_extension_gets_every_setting_microsofts_template_sets(bicep, exposure):
    # Keys read from Azure/AML-Kubernetes files/deployextension.json (tests/data names the commit); the CLI
    # adds the same ones (Azure/azure-cli-extensions src/k8s-extension/azext_k8s_extension/
    # partner_extensions/AzureMLKubernetes.py, Create and __validate_scoring_fe_settings).
    settings = extension_settings(bicep, exposure)
    expected = EXTENSION_TEMPLATE["base_settings"] + EXTENSION_TEMPLATE["inference_settings"]
    if exposure == "publicTls":
        expected += EXTENSION_TEMPLATE["tls_settings"]
    missing = [key for key in expected if key not in settings]
    assert not missing, f"the AzureML extension misses settings Microsoft's template sets: {missing}"
    for key, value in EXTENSION_TEMPLATE["fixed_values"].items():
        assert settings[key] == value, key
    assert settings["enableTraining"] == settings["enableInference"] == "True"
    for key in ("cluster_name", "clusterId", "prometheus.prometheusSpec.externalLabels.cluster_name"):
        assert dotted(settings[key]) == "cluster.id", key
    assert dotted(settings["cluster_name_friendly"]) == "cluster.name"
    assert settings["jobSchedulerLocation"] == settings["location"] == "location"
    extension = bicep["infra/modules/aks.bicep"]["resources"]["amlExtension"]["config"]
    assert extension["identity"]["type"] == EXTENSION_TEMPLATE["identity_type"]
    properties = extension["properties"]
    assert properties["extensionType"].lower() == EXTENSION_TEMPLATE["extension_type"]
    assert properties["releaseTrain"] == EXTENSION_TEMPLATE["release_train"]
    assert properties["scope"]["cluster"]["releaseNamespace"] == EXTENSION_TEMPLATE["release_namespace"]


def test_scoring_is_never_plain_http_on_a_public_ip(bicep):
    # allowInsecureConnections=True with a public load balancer is plain HTTP on the internet. The
    # template's internal load balancer: internalLoadBalancerProvider=azure and
    # scoringFe.serviceType.internalLoadBalancer (Azure/AML-Kubernetes files/deployextension.json).
    assert main_param_default(bicep, "scoringExposure") == "internal"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["scoringExposure"]["value"] == "internal"
    internal, public = extension_settings(bicep, "internal"), extension_settings(bicep, "publicTls")
    assert internal["internalLoadBalancerProvider"] == "azure"
    assert internal["scoringFe.serviceType.internalLoadBalancer"] == "True"
    assert public["allowInsecureConnections"] == "False"
    assert public["sslCname"] == "scoringSslCname" and public["scoringFe.sslSecret"] == "scoringSslSecretName"
    # Whoever calls the internal router must be in the VNet: the nodes, the Function app and the UI.
    assert pools(bicep)["system"]["vnetSubnetID"] == pools(bicep)["gpu"]["vnetSubnetID"] == "aksSubnetId"
    main = bicep["infra/main.bicep"]["modules"]
    assert dotted(main["functionApp"]["config"]["params"]["subnetId"]) == "network.outputs.functionSubnetId"
    assert dotted(main["ui"]["config"]["params"]["subnetId"]) == "network.outputs.uiSubnetId"
    for module, resource in (("functionapp", "functionApp"), ("ui", "site")):
        site = bicep[f"infra/modules/{module}.bicep"]["resources"][resource]["config"]["properties"]
        assert site["virtualNetworkSubnetId"] == "subnetId"
    # The cluster identity must be able to place the internal load balancer in the nodes' subnet.
    roles = bicep["infra/modules/roles.bicep"]["resources"]
    network = roles["clusterNetworkContributor"]["config"]
    assert network["scope"] == "aksSubnet" and "networkContributor" in json.dumps(network["properties"])


def test_a_gpu_node_stays_while_the_extension_volcano_blocks_scaling_from_zero(bicep):
    # The extension's Volcano (gang plugin) keeps the cluster autoscaler from adding a node for a pending
    # training pod, and Kubernetes compute does not add nodes by itself (MicrosoftDocs/azure-ai-docs
    # articles/machine-learning/how-to-troubleshoot-kubernetes-extension.md, "Volcano scheduler integration
    # supporting cluster autoscaler"): without the documented no-gang ConfigMap, keep one GPU node.
    settings = extension_settings(bicep)
    gpu_pool = pools(bicep)["gpu"]
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]

    def deployed(value):  # a literal, or aks.bicep's parameter as main.bicep and the parameters file set it
        if not isinstance(value, str):
            return value
        return parameters.get(value, {}).get("value", main_param_default(bicep, value))

    if settings["installVolcano"] == "True" and "volcanoScheduler.schedulerConfigMap" not in settings:
        assert deployed(gpu_pool["minCount"]) >= 1, "the GPU pool scales to zero, and nothing would scale it up"
        assert deployed(gpu_pool["count"]) >= 1


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

    env = load_environment(
        REPO / "aks_jobs" / "environment.yml", params_override=[{"image": "example.azurecr.io/gpt2-pdf-jobs:abc"}]
    )
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
    installs = [
        segment for op, arg in instructions if op == "RUN" for segment in arg.split("&&") if "pip install" in segment
    ]
    assert installs, "the Dockerfile installs nothing"
    # The project itself (the aks_jobs package) goes in with --no-deps: it adds no package of its own choosing.
    project = copies["/tmp/project/pyproject.toml"] == "pyproject.toml" and "/tmp/project"
    for segment in installs:
        words = shlex.split(segment)
        args = words[words.index("install") + 1 :]
        assert "--no-cache-dir" in args
        packages = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] not in ("-r", "-c")]
        if packages == [project]:
            assert "--no-deps" in args and copies["/tmp/project/aks_jobs/"] == "aks_jobs/"
            # The contracts the steps write and score.py answers with go in beside it.
            assert copies["/tmp/project/pipeline_contracts/"] == "pipeline_contracts/"
            continue
        assert not packages, f"installs unpinned packages: {packages}"
        assert (
            args[args.index("-r") + 1] == "/tmp/requirements.txt"
            and args[args.index("-c") + 1] == "/tmp/constraints.txt"
        )
    assert any(project in shlex.split(segment) for segment in installs), "the image does not install aks_jobs"
    pins = requirement_pins(REPO / "aks_jobs" / "requirements.txt")
    locked = requirement_pins(REPO / "constraints.txt")
    assert {"torch", "transformers", "azureml-inference-server-http", "pypdf"} <= set(pins)
    mismatched = {n: (v, locked.get(n)) for n, v in pins.items() if locked.get(n) != v}
    assert not mismatched, f"aks_jobs/requirements.txt disagrees with constraints.txt: {mismatched}"


def test_jobs_run_as_root_and_only_the_scoring_server_drops_to_uid_1000():
    # AML on Kubernetes mounts job outputs for the image's user, and Microsoft's AzureML images run as
    # root ("USER root is in all the base images and derived images", Azure/AzureML-Containers issue 24):
    # the steps keep root; the scoring server, the one long-running network service, runs as uid 1000.
    instructions = dockerfile_instructions()
    users = [arg.split(":")[0] for op, arg in instructions if op == "USER"]
    assert not users or users[-1] in ("root", "0"), f"job steps would run as {users[-1]}"
    env = " ".join(arg for op, arg in instructions if op == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "HF_HOME=/home/app/" in env
    cmd = json.loads([arg for op, arg in instructions if op == "CMD"][-1])
    separator = cmd.index("--")
    drop, serve = cmd[:separator], cmd[separator + 1 :]
    assert drop[0] == "setpriv" and {"--reuid=1000", "--regid=1000", "--clear-groups"} <= set(drop[1:])
    assert "azmlinfsrv --entry_script" in serve[-1]
    created = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "useradd --uid 1000" in created and "chown -R app:app /home/app" in created
    copied = [arg.split()[-2] for op, arg in instructions if op == "COPY"]
    assert "aks_jobs/" in copied and all((REPO / src).exists() for src in copied)
    # The drop itself, for real (setpriv from util-linux, as in the Debian base image), when we may.
    if os.geteuid() == 0 and shutil.which("setpriv"):
        result = run([*drop, "--", "id", "-u"])
        assert result.returncode == 0 and result.stdout.strip() == "1000", result.stderr


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
    patterns = [
        p.strip().strip("/") for p in funcignore.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]

    def ignored(name: str) -> bool:
        return any(fnmatch(name, p) for p in patterns)

    for heavy in (".venv", ".venv-infra", "node_modules", ".local", ".git"):
        assert ignored(heavy), f".funcignore must exclude {heavy}"
    # The control plane loads the component YAML and uploads aks_jobs/ as job and scoring code; it reads and
    # answers through pipeline_contracts.
    for needed in (
        "function_app",
        "function_app.py",
        "host.json",
        "requirements.txt",
        "aks_jobs",
        "pipeline_contracts",
    ):
        assert not ignored(needed), f".funcignore must keep {needed}"


def _func_publish_files(root: Path) -> list[str]:
    """The files `func azure functionapp publish` packs from `root` (a checkout: git's files), by Core Tools' rules
    (Azure/azure-functions-core-tools, Common/FileSystemHelpers.GetLocalFiles and Common/GitIgnoreParser): .git and
    .vscode folders and files named .funcignore, .gitignore, local.settings.json or project.lock.json never go;
    a .funcignore pattern (leading '/' dropped, '**' any text, '*' any text but '/') denies a path when it matches
    at the path's START, unless a '!' pattern matches it too."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    kept = []
    for path in sorted(p for p in listed if (root / p).is_file()):
        parts = path.split("/")
        if {".git", ".vscode"} & set(parts[:-1]) or parts[-1] in (
            ".funcignore",
            ".gitignore",
            "local.settings.json",
            "project.lock.json",
        ):
            continue
        if not _funcignore_denies(root, path):
            kept.append(path)
    return kept


def _funcignore_denies(root: Path, path: str) -> bool:
    """Whether Core Tools leaves `path` out by `root`'s .funcignore (rules: _func_publish_files)."""
    rules: dict[bool, list[str]] = {False: [], True: []}
    for line in (root / ".funcignore").read_text().split("\n"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules[negated].append(_funcignore_regex(line[negated:].removeprefix("/")))
    positive, negative = (re.compile("|".join(rules[n])) if rules[n] else None for n in (False, True))
    return bool(positive and positive.match(path) and not (negative and negative.match(path)))


def test_funcignore_leaves_out_compiled_python_at_every_depth():
    # Core Tools matches at a path's start, so "__pycache__/" alone would pack function_app/__pycache__/.
    for path in (
        "__pycache__/x.pyc",
        "function_app/__pycache__/settings.cpython-311.pyc",
        "aks_jobs/lm/__pycache__/a.pyc",
    ):
        assert _funcignore_denies(REPO, path), path
    assert not _funcignore_denies(REPO, "function_app/settings.py")


def _funcignore_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".+")
            i += 2
        else:
            out.append("[^/]+" if pattern[i] == "*" else re.escape(pattern[i]))
            i += 1
    return "(?:" + "".join(out) + ")"


def _first_party_imports(path: Path) -> set[str]:
    """Every first-party module `path` imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module]
            if isinstance(node, ast.ImportFrom) and node.module and not node.level
            else []
        )
        found |= {n for n in names if n.split(".")[0] in ("function_app", "aks_jobs", "local_stack", "synthetic_data")}
    return found


def _module_file(module: str) -> str | None:
    base = module.replace(".", "/")
    return next((p for p in (f"{base}.py", f"{base}/__init__.py") if (REPO / p).is_file()), None)


def test_the_function_package_holds_what_function_app_py_needs_and_nothing_local():
    published = set(_func_publish_files(REPO))
    local_only = sorted(p for p in published if p.split("/")[0] in ("local_stack", "synthetic_data", "tests", "bench"))
    assert not local_only, f"the Function package would carry local-only files: {local_only}"
    # function_app.py's imports, followed through the first-party modules; the local backend (local_stack) is
    # imported only where it is chosen, so it is the one thing the package may refer to without holding.
    needed, todo, lazy = set(), ["function_app.py"], set()
    while todo:
        path = todo.pop()
        needed.add(path)
        for module in _first_party_imports(REPO / path):
            parts = module.split(".")
            if parts[0] == "local_stack":
                lazy.add(path)
                continue
            for depth in range(1, len(parts) + 1):  # a module's packages' __init__ files load first
                file = _module_file(".".join(parts[:depth]))
                if file and file not in needed:
                    todo.append(file)
    assert lazy == {"function_app/backends/__init__.py"}, f"only create_backend may import local_stack: {lazy}"
    missing = sorted(
        (
            needed
            | {
                "host.json",
                "requirements.txt",
                "aks_jobs/score.py",
                "aks_jobs/environment.yml",
                *(f"aks_jobs/components/{c}.yml" for c in ("preprocess", "train", "evaluate")),
            }
        )
        - published
    )
    assert not missing, f"the Function package would lack {missing}"


# What the Functions worker does with the package (the app root first on sys.path, see test_functions_app.py),
# with nothing else of this project importable: the editable install's finder is taken away.
_PACKAGE_ONLY_INDEX = """
import importlib, json, os, pkgutil, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in type(f).__module__ + getattr(f, "__module__", "")]
sys.path.insert(0, os.getcwd())  # mimics the Functions worker: the app root on the path
module = importlib.import_module("function_app")
import function_app.backends, function_app.settings
for info in pkgutil.walk_packages(function_app.__path__, "function_app."):
    importlib.import_module(info.name)
try:
    function_app.backends.create_backend(function_app.settings.Settings(pipeline_backend="local"))
    error = None
except ValueError as e:
    error = str(e)
print(json.dumps({"local": sorted(m for m in sys.modules if m.split(".")[0] in ("local_stack", "synthetic_data")),
                  "functions": [f.get_function_name() for f in module.app.get_functions()], "error": error}))
"""


def test_the_published_package_indexes_and_runs_without_the_local_stack(tmp_path):
    for path in _func_publish_files(REPO):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, tmp_path / path)
    out = subprocess.run(
        [sys.executable, "-c", _PACKAGE_ONLY_INDEX],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PIPELINE_BACKEND": "aml"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["local"] == [] and "follow_uploads" in result["functions"]
    # Choosing the local backend there says what is wrong instead of failing on an import.
    assert "local_stack" in result["error"] and "aml" in result["error"]


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


def remember(key, value):
    """What the service now has, for the next call (a created group, app registration, ...)."""
    scenario[key] = value
    Path(os.environ["FAKE_AZURE_SCENARIO"]).write_text(json.dumps(scenario))


if tool in ("kubelogin", "func"):
    reply()
if tool == "curl":
    reply('{"status": "ok"}')
if tool == "kubectl":
    reply("\n".join(scenario["instance_types"]) if "get" in args else "")
if (starts("login") or starts("account", "set") or starts("version") or starts("extension", "add")
        or starts("bicep", "install") or starts("aks", "install-cli") or starts("vm", "list-usage")
        or starts("functionapp", "list-flexconsumption-locations") or starts("ml", "job", "list")
        or starts("aks", "stop")):
    reply()
if starts("storage", "blob", "upload"):
    reply("", 0 if os.path.isfile(opt("--file")) else 1)
if (starts("ml", "compute", "show") or starts("k8s-extension", "show")
        or starts("eventgrid", "system-topic", "event-subscription", "show")):
    reply("Succeeded")
if starts("ml", "environment", "show") and "--label" in args:
    reply("acrgpt2pdfabc123.azurecr.io/gpt2-pdf-jobs:v42")
if starts("ml", "online-endpoint", "show"):
    reply("http://10.40.0.100/api/v1/endpoint/gpt2-pdf/score")
if starts("ml", "online-endpoint", "get-credentials"):
    # An aml_token endpoint has tokens, not keys (azure-ai-ml EndpointAuthToken; get_keys by auth mode):
    # a query for a key finds nothing, as JMESPath on the real answer would.
    answer = {"accessToken": "fake-aml-token", "expiryTimeUtc": 1800000000, "refreshAfterTimeUtc": 1799998200,
              "tokenType": "Bearer"}
    reply(answer.get(opt("--query"), ""))
if starts("account", "show"):
    reply({"user.type": "user", "user.name": "deployer@example.com"}[opt("--query")])
if starts("ad", "signed-in-user", "show"):
    reply(scenario["deployer_id"])
if starts("group", "create"):
    remember("group_exists", True)
    reply()
if starts("extension", "show") or starts("provider", "register"):
    reply()
if starts("group", "show"):
    reply("", 0 if scenario["group_exists"] else 3)
if starts("deployment", "group", "create"):
    reply()
if starts("deployment", "group", "show"):
    name = opt("--query").split(".")[2]
    reply(scenario["outputs"][name])
if starts("acr", "build"):
    # az opens --file relative to ITS working folder (Azure/azure-cli acr/_archive_utils.py _pack_source_code).
    if not os.path.isfile(opt("--file")):
        reply(f"ERROR: Unable to find '{opt('--file')}'", 1)
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
if starts("ad", "app", "list"):
    reply("\n".join(scenario["app_registrations"]))
if starts("ad", "app", "create"):
    remember("app_registrations", ["22222222-aaaa-bbbb-cccc-333333333333"])
    reply(scenario["app_registrations"][0])
if starts("ad", "app", "update") or starts("ad", "app", "delete"):
    reply()
if starts("webapp", "deploy"):
    import zipfile
    record["zip_files"] = sorted(zipfile.ZipFile(opt("--src-path")).namelist())
    record["requirements"] = zipfile.ZipFile(opt("--src-path")).read("requirements.txt").decode()
    reply()
record["unmodelled"] = True
reply("fake Azure: no answer for this call", 2)
'''

# Everything deploy.sh / teardown.sh read from the environment: the tests set these explicitly.
DEPLOY_ENV = {
    "RESOURCE_GROUP",
    "LOCATION",
    "SUBSCRIPTION",
    "PARAMETERS_FILE",
    "IMAGE_TAG",
    "STEPS",
    "DEPLOYMENT_NAME",
    "IMAGE_REPOSITORY",
    "TORCH_INDEX_URL",
    "DEPLOYER_PRINCIPAL_ID",
    "DEPLOYER_PRINCIPAL_TYPE",
    "BLOB_FUNCTION_NAME",
    "EVENT_SUBSCRIPTION_NAME",
    "UI_APP_REGISTRATION",
}

OUTPUTS = {
    "functionAppName": "gpt2pdf-func-abc123",
    "functionAppHostName": "gpt2pdf-func-abc123.azurewebsites.net",
    "storageAccountName": "stgpt2pdfdataabc123",
    "dataContainerName": "gpt2-training-data",
    "inputsPrefix": "inputs/",
    "systemTopicName": "gpt2pdf-egst-abc123",
    "workspaceName": "gpt2pdf-mlw-abc123",
    "registryName": "acrgpt2pdfabc123",
    "registryLoginServer": "acrgpt2pdfabc123.azurecr.io",
    "clusterName": "gpt2pdf-aks-abc123",
    "uiAppName": "gpt2pdf-ui-abc123",
    "uiHostName": "gpt2pdf-ui-abc123.azurewebsites.net",
}


@pytest.fixture
def fake_azure(tmp_path):
    """A copy of the deployable files (plus a decoy .venv) and a PATH whose az/kubectl/kubelogin/func
    record each call and answer from `scenario`."""
    checkout = tmp_path / "checkout"
    for part in ("infra", "aks_jobs", "pipeline_contracts", "ui", "docs", "samples"):
        shutil.copytree(REPO / part, checkout / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("constraints.txt", "pyproject.toml"):
        shutil.copy(REPO / name, checkout / name)
    (checkout / ".funcignore").write_text(".venv*\nnode_modules\n")
    (checkout / ".venv" / "lib").mkdir(parents=True)
    (checkout / ".venv" / "lib" / "big.bin").write_bytes(b"\0" * 1024)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fake_azure.py"
    fake.write_text(FAKE_AZURE)
    for name in ("az", "kubectl", "kubelogin", "func", "curl"):
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
        "app_registrations": [],
    }

    class Fake:
        root = checkout
        log = tmp_path / "calls.jsonl"
        answers = scenario  # tests edit this before .run()
        where = tmp_path  # the folder the script is run from

        def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
            return self.bash(str(checkout / "infra" / script), *args, **env)

        def bash(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
            scenario_file = tmp_path / "scenario.json"
            scenario_file.write_text(json.dumps(self.answers))
            self.log.unlink(missing_ok=True)
            environ = {k: v for k, v in os.environ.items() if k not in DEPLOY_ENV}
            environ.update(
                PATH=f"{bin_dir}:{os.environ['PATH']}",
                FAKE_AZURE_LOG=str(self.log),
                FAKE_AZURE_SCENARIO=str(scenario_file),
                **env,
            )
            return run(["bash", script, *args], env=environ, cwd=self.where)

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
    rest = call["args"][call["args"].index(name) + 1 :]
    return rest[: next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]


@pytest.mark.parametrize("where", ["elsewhere", "root", "infra"])
def test_deploy_runs_every_step_in_order_with_the_right_arguments(fake_azure, tmp_path, where):
    # From any folder: the repo root, infra/, or somewhere unrelated.
    fake_azure.where = {
        "elsewhere": tmp_path / "elsewhere",
        "root": fake_azure.root,
        "infra": fake_azure.root / "infra",
    }[where]
    fake_azure.where.mkdir(exist_ok=True)
    result = fake_azure.run(
        "deploy.sh", "-g", "rg-gpt2", "-l", "westeurope", "--set", "gpuPoolMaxCount=2", IMAGE_TAG="v42"
    )
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
    # The UI's sign-in app registration is made first (none existed), and Bicep gets its client id.
    i_app, app = one(calls, "az", "ad", "app", "create")
    assert arg(app, "--display-name") == "gpt2-pdf-ui-rg-gpt2" and arg(app, "--enable-id-token-issuance") == "true"
    assert "uiAuthClientId=22222222-aaaa-bbbb-cccc-333333333333" in infra["args"] and i_app < i_infra

    i_image, build = one(calls, "az", "acr", "build")
    assert arg(build, "--registry") == OUTPUTS["registryName"]
    assert arg(build, "--image") == "gpt2-pdf-jobs:v42"
    assert Path(arg(build, "--file")) == Path(build["args"][-1]) / "aks_jobs" / "Dockerfile"
    # Only what the Dockerfile copies is uploaded: aks_jobs/, pipeline_contracts/ and constraints.txt, not the
    # decoy .venv.
    files = build["context_files"]
    assert {
        "aks_jobs/Dockerfile",
        "constraints.txt",
        "pyproject.toml",
        "aks_jobs/requirements.txt",
        "pipeline_contracts/__init__.py",
        "pipeline_contracts/evaluation.py",
    } <= set(files)
    assert all(
        f in ("constraints.txt", "pyproject.toml") or f.startswith(("aks_jobs/", "pipeline_contracts/")) for f in files
    ), files
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
    assert arg(sub, "--endpoint") == (
        "https://gpt2pdf-func-abc123.azurewebsites.net/runtime/webhooks/eventgrid"
        "?functionName=follow_uploads&code=fake-eventgrid-extension-key"
    )
    assert args_after(sub, "--included-event-types") == [
        "Microsoft.Storage.BlobCreated",
        "Microsoft.Storage.BlobDeleted",
    ]
    assert arg(sub, "--subject-begins-with") == "/blobServices/default/containers/gpt2-training-data/blobs/inputs/"

    i_redirect, redirect = one(calls, "az", "ad", "app", "update")
    assert arg(redirect, "--id") == "22222222-aaaa-bbbb-cccc-333333333333"
    assert arg(redirect, "--web-redirect-uris") == f"https://{OUTPUTS['uiHostName']}/.auth/login/aad/callback"
    i_ui, ui = one(calls, "az", "webapp", "deploy")
    assert arg(ui, "--name") == OUTPUTS["uiAppName"] and arg(ui, "--type") == "zip"
    assert {
        "ui/app.py",
        "ui/requirements.txt",
        "constraints.txt",
        "requirements.txt",
        "pipeline_contracts/api_responses.py",
    } <= set(ui["zip_files"])
    assert all(
        f.startswith(("ui/", "pipeline_contracts/")) or f in ("constraints.txt", "requirements.txt")
        for f in ui["zip_files"]
    )
    assert not [f for f in ui["zip_files"] if "__pycache__" in f]
    assert ui["requirements"].split() == ["-c", "constraints.txt", "-r", "ui/requirements.txt"]

    assert i_group < i_infra < i_image < i_env < i_creds < i_login < i_apply < i_publish < i_redirect < i_ui < i_events
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


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "no resource group"),
        (("-g", "rg-gpt2", "--steps", "infra,magic"), "unknown step 'magic'"),
        (("-g", "rg-gpt2", "--steps", "infra"), "does not exist: pass -l REGION"),
    ],
)
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
    # The UI's app registration lives in the tenant, not the group: deleted by id.
    fake_azure.answers["app_registrations"] = ["22222222-aaaa-bbbb-cccc-333333333333"]
    assert fake_azure.run("teardown.sh", "-g", "rg-gpt2", "--yes").returncode == 0
    _, app = one(fake_azure.calls(), "az", "ad", "app", "delete")
    assert arg(app, "--id") == "22222222-aaaa-bbbb-cccc-333333333333"


def test_teardown_without_confirmation_deletes_nothing(fake_azure):
    fake_azure.answers["group_exists"] = True
    result = fake_azure.run("teardown.sh", "-g", "rg-gpt2")  # stdin is empty: no confirmation
    assert result.returncode != 0
    assert not find(fake_azure.calls(), "az", "group", "delete")


# ---------------------------------------------------------------- docs/deploy.md, every command

DOC = REPO / "docs" / "deploy.md"
DOC_TOOLS = ("az ", "kubectl ", "kubelogin ", "func ", "curl ", "infra/deploy.sh ", "infra/teardown.sh ")


def doc_command_blocks() -> list[str]:
    """The ```bash blocks of docs/deploy.md in order (those inside list items dedented)."""
    return [
        textwrap.dedent(block)
        for block in re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    ]


def test_deploy_md_has_no_command_outside_its_blocks():
    prose = re.sub(r"^[ \t]*```.*?^[ \t]*```", "", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)
    inline = [span for span in re.findall(r"`([^`]+)`", prose) if span.startswith(DOC_TOOLS)]
    assert not inline, f"commands in docs/deploy.md outside its command blocks (the test would not run them): {inline}"


def test_every_command_of_deploy_md_runs_in_order_against_the_recorded_cli(fake_azure):
    script = fake_azure.root / "docs-deploy.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(doc_command_blocks()))
    fake_azure.where = fake_azure.root  # the page is followed from the repository root
    result = fake_azure.bash(str(script), IMAGE_TAG="v42")
    calls = fake_azure.calls()
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [c for c in calls if c.get("unmodelled")], [c["args"] for c in calls if c.get("unmodelled")]
    first, tls = find(calls, "az", "deployment", "group", "create")
    assert "scoringExposure=publicTls" in tls[1]["args"] and "scoringExposure=publicTls" not in first[1]["args"]
    one(calls, "az", "webapp", "deploy")
    # The scoring call carries the endpoint's aml_token (accessToken), not a key it does not have.
    _, credentials = one(calls, "az", "ml", "online-endpoint", "get-credentials")
    assert arg(credentials, "--query") == "accessToken"
    ((_, scoring),) = [(i, c) for i, c in find(calls, "kubectl") if "run" in c["args"]]
    assert "Authorization: Bearer fake-aml-token" in scoring["args"]
    one(calls, "az", "group", "delete")
