//! Reads `Package` and `Version` from a `.deb` without dpkg: the outer `ar` archive, then
//! `control.tar` (plain, gzip, xz or zstd — the compressions dpkg-deb writes), then its `control`
//! file. In-process so that signing and verification behave the same on any machine.

use std::io::{Read, Seek};

/// A control file larger than this is not one dpkg-deb would write.
const MAX_CONTROL: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("not a Debian package: {0}")]
    Format(String),
    #[error("reading the package: {0}")]
    Io(#[from] std::io::Error),
}

/// `Package` and `Version` from the package's control file.
pub fn read_control(reader: impl Read + Seek) -> Result<Control, DebError> {
    let mut archive = ar::Archive::new(reader);
    let mut first = true;
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| DebError::Format(format!("bad ar archive: {e}")))?;
        let id = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if first && id != "debian-binary" {
            return Err(DebError::Format(
                "the first member is not `debian-binary`".into(),
            ));
        }
        first = false;
        let Some(compression) = id.strip_prefix("control.tar") else {
            continue;
        };
        let inner: Box<dyn Read + '_> = match compression {
            "" => Box::new(entry),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            ".xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            ".zst" => Box::new(
                ruzstd::decoding::StreamingDecoder::new(entry)
                    .map_err(|e| DebError::Format(format!("control.tar.zst: {e}")))?,
            ),
            other => return Err(DebError::Format(format!("unsupported control.tar{other}"))),
        };
        return control_from_tar(inner);
    }
    Err(DebError::Format("no control.tar member".into()))
}

fn control_from_tar(reader: impl Read) -> Result<Control, DebError> {
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries()? {
        let entry = entry?;
        let path = entry.path()?.into_owned();
        if !matches!(path.to_str(), Some("control" | "./control")) {
            continue;
        }
        let mut text = String::new();
        entry.take(MAX_CONTROL).read_to_string(&mut text)?;
        return parse_control(&text);
    }
    Err(DebError::Format("control.tar has no `control` file".into()))
}

/// The `Package` and `Version` fields of a control paragraph (deb-control(5)).
pub fn parse_control(text: &str) -> Result<Control, DebError> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.eq_ignore_ascii_case(name) && !line.starts_with([' ', '\t']))
                .then(|| value.trim().to_string())
        })
    };
    let need = |name: &str| {
        field(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| DebError::Format(format!("control file has no `{name}` field")))
    };
    Ok(Control {
        package: need("Package")?,
        version: need("Version")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_fields_are_read() {
        let c = parse_control(
            "Package: storebox\nVersion: 1.2.3-1\nDescription: x\n Version: not this\n",
        )
        .unwrap();
        assert_eq!(c.package, "storebox");
        assert_eq!(c.version, "1.2.3-1");
        assert!(parse_control("Package: storebox\n").is_err());
    }

    #[test]
    fn a_gzip_control_tar_in_an_ar_archive_is_read() {
        let mut control_tar = tar::Builder::new(Vec::new());
        let body = b"Package: demo\nVersion: 0.0.1\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        control_tar
            .append_data(&mut header, "./control", &body[..])
            .unwrap();
        let control_tar = control_tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &control_tar).unwrap();
        let gz = gz.finish().unwrap();
        let mut ar = ar::Builder::new(Vec::new());
        ar.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        ar.append(
            &ar::Header::new(b"control.tar.gz".to_vec(), gz.len() as u64),
            &gz[..],
        )
        .unwrap();
        let deb = ar.into_inner().unwrap();
        let c = read_control(std::io::Cursor::new(&deb)).unwrap();
        assert_eq!((c.package.as_str(), c.version.as_str()), ("demo", "0.0.1"));
        assert!(read_control(std::io::Cursor::new(b"not an archive")).is_err());
    }
}
