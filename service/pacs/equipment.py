"""Who made a DICOM result: the service (manufacturer, software version) and the model (name and bundle hash)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from service.explainer import ModelInfo

MANUFACTURER = "DeepMiner Service"
DEVICE_NAME = "DeepMiner"


@dataclass(frozen=True)
class Equipment:
    """The equipment and algorithm identification every result carries.

    ``model_version`` is the bundle's full sha256, the version that changes
    whenever any file of the model does.
    """

    model_name: str
    model_id: str
    model_version: str
    architecture: str
    software_version: str

    @classmethod
    def for_model(cls, model: ModelInfo, *, software_version: str) -> Equipment:
        return cls(
            model_name=model.id.rsplit("@", 1)[0],
            model_id=model.id,
            model_version=model.hash,
            architecture=model.architecture,
            software_version=software_version,
        )

    @property
    def device_uid(self) -> str:
        """A UID for the model as an observer device, the same for every result of one bundle (a 2.25 UUID form)."""
        return "2.25." + str(int(hashlib.sha256(self.model_version.encode()).hexdigest()[:32], 16))

    @property
    def model_label(self) -> str:
        """Manufacturer's Model Name (LO, 64 characters): the model id."""
        return self.model_id[:64]

    @property
    def serial_number(self) -> str:
        """Device Serial Number: the first 16 hex digits of the bundle hash."""
        return self.model_version[:16]

    @property
    def software_versions(self) -> list[str]:
        """Software Versions: the service's version, then the bundle hash (each LO, 64 characters).

        A list, since pydicom refuses tuples as multi-valued element values.
        """
        return [self.software_version[:64], self.model_version[:64]]
