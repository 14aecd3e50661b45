"""The stand-in downloader-uploader (../downloader_uploader.py) laid out as the old service's source folder: what
`flask --app service run` loads from DIR, configured as the old service is — its working folder
os.path.join(BASE, FOLDER, SUB_FOLDER) and SERVICE_KEY from the environment, else this folder's .env (python-dotenv,
the environment winning). The stand-in Dropbox is the folder STANDIN_DROPBOX, its token STANDIN_DROPBOX_TOKEN.

It loads its sibling by path, not as `tests.standins…`: started from this folder, with the old service's sys.path
(this folder first), it imports nothing of the repository.
"""
import importlib.util
import os
from pathlib import Path

from dotenv import load_dotenv

load_dotenv(Path(__file__).with_name(".env"))
_spec = importlib.util.spec_from_file_location("standin_downloader_uploader",
                                               Path(__file__).resolve().parent.parent / "downloader_uploader.py")
assert _spec is not None and _spec.loader is not None
_standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_standin)

working_directory = os.path.join(os.environ["BASE"], os.environ["FOLDER"], os.environ["SUB_FOLDER"])
app = _standin.DownloaderUploader(Path(working_directory), Path(os.environ["STANDIN_DROPBOX"]),
                                  os.environ["SERVICE_KEY"], os.environ["STANDIN_DROPBOX_TOKEN"]).app
