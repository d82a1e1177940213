"""The error tree: every class pickles, inherits its built-in, names what was wrong."""
from __future__ import annotations

import inspect
import pickle

import pytest

import dwray.errors as errors
from dwray.errors import DwrayError

CLASSES = [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
           if issubclass(obj, DwrayError) and obj.__module__ == errors.__name__]

BUILTIN = {
    "ConfigError": ValueError, "InvalidArgument": ValueError, "InvalidBucketName": ValueError,
    "InvalidObjectKey": ValueError, "KeyTooLong": ValueError, "InvalidRange": ValueError,
    "InvalidBlobId": ValueError, "InvalidContinuationToken": ValueError, "EntityTooLarge": ValueError,
    "EntityTooSmall": ValueError, "InvalidPart": ValueError, "InvalidPartOrder": ValueError,
    "NotFound": LookupError, "BucketNotFound": LookupError, "ObjectNotFound": LookupError,
    "BlobNotFound": LookupError, "UploadNotFound": LookupError,
    "TenantNotFound": LookupError, "AccessKeyNotFound": LookupError, "BackendNotFound": LookupError,
    "AlreadyExists": FileExistsError, "BucketAlreadyExists": FileExistsError,
    "TenantAlreadyExists": FileExistsError, "BlobExists": FileExistsError,
    "BucketNotEmpty": OSError, "DataDirInUse": OSError, "StorageError": OSError, "StorageFull": OSError,
    "DurabilityError": OSError,
    "IntegrityError": ValueError, "KeyringError": RuntimeError, "KeyNotFound": RuntimeError,
    "KeyRetired": RuntimeError, "CatalogError": RuntimeError, "SchemaVersionError": RuntimeError,
    "DependencyMissing": ImportError, "DwrayError": Exception, "PluginNotFound": LookupError,
    "PluginError": RuntimeError, "PluginRefused": RuntimeError, "PluginTimeout": TimeoutError,
    "PluginUnavailable": ConnectionError, "NotReady": RuntimeError, "CircuitOpen": ConnectionError,
    "BulkheadFull": ConnectionError, "Backpressure": RuntimeError,
    "MasterKeyMissing": RuntimeError, "KeyShredded": RuntimeError, "KmsUnavailable": RuntimeError,
    "SecretError": RuntimeError, "SecretNotFound": LookupError, "SecretConflict": RuntimeError,
    "SecretUnavailable": RuntimeError, "QuotaExceeded": PermissionError, "AccessDenied": PermissionError,
    "BucketAccessDenied": PermissionError, "BucketAlreadyOwnedByYou": FileExistsError,
    "BucketNameClash": RuntimeError, "PreconditionFailed": ValueError, "ConditionalRequestConflict": ValueError,
    "DeleteMarkerVersion": ValueError, "InvalidTag": ValueError, "ObjectDeleted": LookupError,
}


def sample(cls: type[DwrayError]) -> DwrayError:
    return cls(*(f"<{name}-value>" for name in cls.fields))


def test_all_is_honest() -> None:
    assert sorted(errors.__all__) == sorted(cls.__name__ for cls in CLASSES)


def test_every_class_is_in_the_docstring_tree() -> None:
    for cls in CLASSES:
        assert f"{cls.__name__}(" in errors.__doc__ or f"{cls.__name__} " in errors.__doc__, cls.__name__


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_pickle_round_trip(cls: type[DwrayError]) -> None:
    error = sample(cls)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    for name in cls.fields:
        assert getattr(copy, name) == getattr(error, name)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_inherits_matching_builtin_and_names_what_was_wrong(cls: type[DwrayError]) -> None:
    error = sample(cls)
    assert isinstance(error, BUILTIN[cls.__name__])
    assert cls.__doc__ and cls.__doc__.strip()
    for name in cls.fields:
        if name not in ("version_id", "last_modified"):  # details an answer carries, not what was wrong
            assert f"<{name}-value>" in str(error), (cls.__name__, name, str(error))


def test_keyword_arguments_and_missing_arguments() -> None:
    error = errors.StorageFull(operation="put", target="t/b/x", reason="disk full")
    assert str(error) == "storage put of 't/b/x' failed, no space left: disk full"
    assert pickle.loads(pickle.dumps(error)).reason == "disk full"
    with pytest.raises(TypeError, match="missing reason"):
        errors.StorageError("put", "x")
    with pytest.raises(TypeError, match="unexpected"):
        errors.BucketNotFound(bucket="b", colour="red")


def test_object_not_found_without_version() -> None:
    assert str(errors.ObjectNotFound("bkt", "k")) == "object 'k' does not exist in bucket 'bkt'"
    assert "version v1" in str(errors.ObjectNotFound("bkt", "k", "v1"))
