"""Where a model comes from: a bundle path, an s3:// bundle, or an MLflow ``models:/`` / ``runs:/`` URI."""

from __future__ import annotations

import glob
import os
import tempfile

from resseg_ray.errors import BundleError
from resseg_ray.geo.storage import StorageSettings, download, is_s3
from resseg_ray.models.bundle import BUNDLE_SUFFIX


def resolve_bundle(
    uri: str, dest_dir: str, settings: StorageSettings, tracking_uri: str | None = None
) -> str:
    """A local path of the bundle behind ``uri``, downloading into ``dest_dir`` when needed.

    ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and ``runs:/RUN_ID/model`` are fetched
    from the MLflow tracking server (``tracking_uri``, default ``MLFLOW_TRACKING_URI``);
    the model's ``artifacts/*.resseg.safetensors`` is the bundle.
    """
    if uri.startswith(("models:/", "runs:/")):
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if tracking_uri:
            mlflow.set_registry_uri(tracking_uri)
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=dest_dir, tracking_uri=tracking_uri
            )
        except (MlflowException, OSError) as exc:
            raise BundleError(
                f"cannot fetch model {uri} from MLflow at {tracking_uri or 'the default store'} "
                f"({str(exc).splitlines()[0]}); check the name/alias and MLFLOW_TRACKING_URI"
            ) from None
        found = sorted(glob.glob(os.path.join(local, "**", "*" + BUNDLE_SUFFIX), recursive=True))
        if not found:
            raise BundleError(
                f"MLflow model {uri} holds no {BUNDLE_SUFFIX} bundle; was it logged by resseg-ray?"
            )
        return found[0]
    if is_s3(uri):
        return download(uri, dest_dir, settings)
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    if not os.path.isfile(path):
        raise BundleError(f"model bundle {path!r} does not exist; give a bundle path or a models:/ URI")
    return path


def fetch_bundle_bytes(uri: str, settings: StorageSettings, tracking_uri: str | None = None) -> bytes:
    """The bytes of the bundle behind ``uri`` (see :func:`resolve_bundle`), e.g. to load it with
    :func:`~resseg_ray.models.bundle.load_bundle_bytes` or to send it to Ray workers."""
    with tempfile.TemporaryDirectory(prefix="resseg-model-") as tmp:
        path = resolve_bundle(uri, tmp, settings, tracking_uri)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise BundleError(f"cannot read model bundle {path!r}: {exc.strerror}") from None


def registry_version(uri: str, tracking_uri: str | None = None) -> tuple[str, str] | None:
    """(registered name, version) of a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI
    as the MLflow registry resolves it now; None for other URIs or when it cannot be asked."""
    if not uri.startswith("models:/"):
        return None
    path = uri[len("models:/") :]
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(
            tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
            registry_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
        )
        if "@" in path:
            name, alias = path.split("@", 1)
            return name, str(client.get_model_version_by_alias(name, alias).version)
        name, _, version = path.partition("/")
        if version.isdigit():
            return name, version
        if version in ("", "latest"):
            latest = client.search_model_versions(
                f"name='{name}'", order_by=["version_number DESC"], max_results=1
            )
            return (name, str(latest[0].version)) if latest else None
    except Exception:  # the registry's answer is provenance, not needed to segment
        return None
    return None
