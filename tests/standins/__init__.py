"""Stand-ins for the old system's other two parts, written from their contract: the downloader-uploader (a Flask
service in front of Dropbox) and Dropbox itself (a folder), and the old client's flow."""
