"""The stage and KMS conformance suites of ``dwray.testing``, run against dwray's own plugins.

The plugin kit's templates subclass these suites; running them here against the
built-in ``stage.frames`` and ``kms.local`` shows the suites ask only what a
correct implementation does.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from dwray.builtins.services import LocalKmsPlugin
from dwray.builtins.stages import FrameStagePlugin
from dwray.testing.kms_conformance import KmsConformance
from dwray.testing.stage_conformance import StageConformance


class TestBuiltinFrameStage(StageConformance):
    @pytest.fixture
    def stage(self) -> FrameStagePlugin:
        return FrameStagePlugin()


class TestBuiltinLocalKms(KmsConformance):
    @pytest.fixture
    def kms(self, tmp_path: Path) -> LocalKmsPlugin:
        return LocalKmsPlugin(str(tmp_path / "keys" / "keyring.json"),
                              master=f"secret://file/{tmp_path / 'config' / 'master.key'}")
