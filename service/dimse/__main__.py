"""``python -m service.dimse``: the DICOM listener (Storage SCP) that explains what it receives."""

from service.dimse.listener import main

main()
