"""What every DICOM result of this service says about itself: its own series and instance, and the device."""

from __future__ import annotations

from typing import Any

from service.pacs.equipment import MANUFACTURER, Equipment


def result_instance(
    equipment: Equipment, *, series_uid: str, sop_uid: str, series_number: int, series_description: str
) -> dict[str, Any]:
    """The keyword arguments a highdicom result constructor takes for the result's series, instance and device."""
    return {
        "series_instance_uid": series_uid,
        "series_number": series_number,
        "sop_instance_uid": sop_uid,
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "series_description": series_description,
        "manufacturer_model_name": equipment.model_label,
        "software_versions": equipment.software_versions,
        "device_serial_number": equipment.serial_number,
    }
