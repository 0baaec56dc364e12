"""File push to clients (``POST /files``): the upload form, delivery over SFTP, results."""
