//! Tesseract's C API (`capi.h`), loaded at run time from
//! `libtesseract.so.5` with `libloading`, behind a small safe wrapper.
//!
//! Why hand-written and not `tesseract-sys`/`leptess`/`tesseract-plumbing`:
//! those generate their bindings with bindgen at build time (libclang and
//! the `-dev` headers on every build machine) and link the library at
//! build time, so a binary built with them does not start where Tesseract
//! is missing. We call sixteen functions whose C signatures have been
//! stable since Tesseract 4; loading them at run time, like PDFium, keeps
//! the binary running without Tesseract (OCR is then reported unavailable)
//! and the build free of C toolchains. ARCHITECTURE.md records the choice.
//!
//! Only ever used in a converter child ([`crate::extract::isolate`]).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `TessBaseAPI*`, `ETEXT_DESC*`: opaque.
type Handle = *mut c_void;

/// The functions we call, copied out of the library (which [`Library`]
/// keeps loaded for as long as any of them can be called).
struct Functions {
    version: unsafe extern "C" fn() -> *const c_char,
    create: unsafe extern "C" fn() -> Handle,
    delete: unsafe extern "C" fn(Handle),
    init3: unsafe extern "C" fn(Handle, *const c_char, *const c_char) -> c_int,
    end: unsafe extern "C" fn(Handle),
    clear: unsafe extern "C" fn(Handle),
    set_variable: unsafe extern "C" fn(Handle, *const c_char, *const c_char) -> c_int,
    set_image: unsafe extern "C" fn(Handle, *const u8, c_int, c_int, c_int, c_int),
    set_source_resolution: unsafe extern "C" fn(Handle, c_int),
    set_page_seg_mode: unsafe extern "C" fn(Handle, c_int),
    recognize: unsafe extern "C" fn(Handle, Handle) -> c_int,
    get_utf8_text: unsafe extern "C" fn(Handle) -> *mut c_char,
    delete_text: unsafe extern "C" fn(*const c_char),
    monitor_create: unsafe extern "C" fn() -> Handle,
    monitor_delete: unsafe extern "C" fn(Handle),
    monitor_set_deadline_msecs: unsafe extern "C" fn(Handle, c_int),
}

/// The loaded library; cheap to clone and share between threads (each
/// thread makes its own [`Engine`]).
#[derive(Clone)]
pub struct Library {
    inner: Arc<Loaded>,
}

struct Loaded {
    functions: Functions,
    /// Keeps the code behind `functions` mapped; never used otherwise.
    _library: libloading::Library,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tesseract::Library").finish_non_exhaustive()
    }
}

impl Library {
    /// Loads `library` (a path, or a file name the dynamic loader finds:
    /// `libtesseract.so.5`) and resolves every function we call.
    pub fn load(library: &Path) -> Result<Library, String> {
        // SAFETY: loading runs the library's initialisers; libtesseract's
        // (and its dependencies') only set up their own state.
        let loaded = unsafe { libloading::Library::new(library) }
            .map_err(|e| format!("loading {}: {e}", library.display()))?;
        macro_rules! function {
            ($name:literal) => {
                // SAFETY: the type is the function's C signature in
                // tesseract/capi.h (Tesseract 4 and 5).
                *unsafe { loaded.get($name) }.map_err(|e| {
                    format!(
                        "{} has no {}: {e}",
                        library.display(),
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    )
                })?
            };
        }
        let functions = Functions {
            version: function!(b"TessVersion\0"),
            create: function!(b"TessBaseAPICreate\0"),
            delete: function!(b"TessBaseAPIDelete\0"),
            init3: function!(b"TessBaseAPIInit3\0"),
            end: function!(b"TessBaseAPIEnd\0"),
            clear: function!(b"TessBaseAPIClear\0"),
            set_variable: function!(b"TessBaseAPISetVariable\0"),
            set_image: function!(b"TessBaseAPISetImage\0"),
            set_source_resolution: function!(b"TessBaseAPISetSourceResolution\0"),
            set_page_seg_mode: function!(b"TessBaseAPISetPageSegMode\0"),
            recognize: function!(b"TessBaseAPIRecognize\0"),
            get_utf8_text: function!(b"TessBaseAPIGetUTF8Text\0"),
            delete_text: function!(b"TessDeleteText\0"),
            monitor_create: function!(b"TessMonitorCreate\0"),
            monitor_delete: function!(b"TessMonitorDelete\0"),
            monitor_set_deadline_msecs: function!(b"TessMonitorSetDeadlineMSecs\0"),
        };
        Ok(Library {
            inner: Arc::new(Loaded {
                functions,
                _library: loaded,
            }),
        })
    }

    /// Tesseract's version (`5.3.0`).
    pub fn version(&self) -> String {
        // SAFETY: TessVersion returns a static NUL-terminated string.
        let version = unsafe { (self.inner.functions.version)() };
        if version.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated, static (checked above).
        unsafe { CStr::from_ptr(version) }
            .to_string_lossy()
            .into_owned()
    }

    /// A recognizer for `languages` (`eng+deu`) with models from
    /// `tessdata` (the directory holding `eng.traineddata`). Reads the
    /// models: under the converter's sandbox, `tessdata` must be readable.
    pub fn engine(&self, tessdata: &Path, languages: &str) -> Result<Engine, String> {
        let f = &self.inner.functions;
        let datapath = CString::new(tessdata.as_os_str().as_encoded_bytes())
            .map_err(|_| "the tessdata path holds a NUL byte".to_string())?;
        let language = CString::new(languages)
            .map_err(|_| "the OCR language list holds a NUL byte".to_string())?;
        // SAFETY: TessBaseAPICreate allocates a new handle (or returns NULL).
        let handle = unsafe { (f.create)() };
        if handle.is_null() {
            return Err("Tesseract could not create a recognizer".into());
        }
        let engine = Engine {
            library: self.clone(),
            handle,
        };
        // SAFETY: a live handle and two NUL-terminated strings that outlive
        // the call; Init3 copies what it keeps.
        let status = unsafe { (f.init3)(handle, datapath.as_ptr(), language.as_ptr()) };
        if status != 0 {
            return Err(format!(
                "Tesseract could not load the language models {languages} from {}",
                tessdata.display()
            ));
        }
        // PSM_AUTO: find the page's blocks, columns and paragraphs, as the
        // `tesseract` command does (the API's default, PSM_SINGLE_BLOCK,
        // reads a page as one block: noise becomes words, columns mix).
        // SAFETY: a live, initialised handle; 3 is PSM_AUTO in capi.h.
        unsafe { (f.set_page_seg_mode)(handle, 3) };
        Ok(engine)
    }
}

/// One initialised recognizer (`TessBaseAPI`). Not shared between
/// threads: each OCR thread owns one.
pub struct Engine {
    library: Library,
    handle: Handle,
}

// SAFETY: a TessBaseAPI may be used from any one thread at a time; `Engine`
// is not `Sync`, and every call takes `&mut self` or happens in `drop`.
unsafe impl Send for Engine {}

/// A page's pixels: 8-bit grey, one byte per pixel, rows without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// What recognizing a page gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognized {
    /// Tesseract's text: lines end with `\n`, paragraphs are separated by
    /// a blank line.
    Text(String),
    /// Recognition was stopped at the deadline.
    TimedOut,
    /// Tesseract refused the page.
    Failed,
}

impl Engine {
    /// Sets a Tesseract variable (`tessedit_pageseg_mode`, …); unknown
    /// names are ignored.
    pub fn set(&mut self, name: &str, value: &str) {
        let (Ok(name), Ok(value)) = (CString::new(name), CString::new(value)) else {
            return;
        };
        // SAFETY: a live handle and NUL-terminated strings; the result only
        // says whether the variable exists.
        unsafe {
            (self.library.inner.functions.set_variable)(self.handle, name.as_ptr(), value.as_ptr())
        };
    }

    /// Recognizes `image` rendered at `dpi` (0: unknown, Tesseract
    /// estimates it from the text), stopping after `deadline`.
    pub fn recognize(&mut self, image: &GreyImage, dpi: u32, deadline: Duration) -> Recognized {
        let f = &self.library.inner.functions;
        let (Ok(width), Ok(height)) = (c_int::try_from(image.width), c_int::try_from(image.height))
        else {
            return Recognized::Failed;
        };
        if image.pixels.len() != image.width as usize * image.height as usize
            || width == 0
            || height == 0
        {
            return Recognized::Failed;
        }
        // SAFETY: `pixels` holds width × height bytes (checked above), one
        // byte per pixel and `width` bytes per row; Tesseract copies them
        // into its own image before SetImage returns.
        unsafe {
            (f.set_image)(self.handle, image.pixels.as_ptr(), width, height, 1, width);
            if dpi > 0 {
                (f.set_source_resolution)(self.handle, dpi.min(2400) as c_int);
            }
        }
        let millis = deadline.as_millis().clamp(1, i32::MAX as u128) as c_int;
        // SAFETY: TessMonitorCreate allocates a monitor (or returns NULL).
        let monitor = unsafe { (f.monitor_create)() };
        if monitor.is_null() {
            return Recognized::Failed;
        }
        let started = Instant::now();
        // SAFETY: a live monitor; the deadline counts from now.
        unsafe { (f.monitor_set_deadline_msecs)(monitor, millis) };
        // SAFETY: a live handle with an image set, and a live monitor that
        // outlives the call.
        let status = unsafe { (f.recognize)(self.handle, monitor) };
        // SAFETY: the monitor is ours and no longer used.
        unsafe { (f.monitor_delete)(monitor) };
        let recognized = if status != 0 {
            if started.elapsed() >= deadline {
                Recognized::TimedOut
            } else {
                Recognized::Failed
            }
        } else {
            // SAFETY: recognition is done, so GetUTF8Text only collects its
            // result: a new NUL-terminated string we free with
            // TessDeleteText (or NULL).
            let text = unsafe { (f.get_utf8_text)(self.handle) };
            if text.is_null() {
                Recognized::Text(String::new())
            } else {
                // SAFETY: non-null and NUL-terminated (checked above).
                let owned = unsafe { CStr::from_ptr(text) }
                    .to_string_lossy()
                    .into_owned();
                // SAFETY: `text` came from GetUTF8Text and is freed once.
                unsafe { (f.delete_text)(text) };
                Recognized::Text(owned)
            }
        };
        // SAFETY: a live handle; frees the page's image and results.
        unsafe { (f.clear)(self.handle) };
        recognized
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let f = &self.library.inner.functions;
        // SAFETY: the handle is ours, live, and used by no one else; End
        // frees its models, Delete the handle itself.
        unsafe {
            (f.end)(self.handle);
            (f.delete)(self.handle);
        }
    }
}
