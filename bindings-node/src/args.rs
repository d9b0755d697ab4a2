//! Reading loosely typed JS arguments into Rust values, with errors that name the bad value.
//! napi's own conversion errors carry no floodwall code, so every option goes through here.

use napi::bindgen_prelude::{FromNapiValue, Object, Unknown};
use napi::{JsValue, ValueType};

use crate::error::{Failure, Outcome};

/// A value as an error message shows it: strings quoted, others by type and value.
pub fn describe(v: &Unknown) -> String {
    let env = v.value().env;
    let raw = v.raw();
    match v.get_type() {
        Ok(ValueType::String) => match unsafe { String::from_napi_value(env, raw) } {
            Ok(s) => {
                let shown: String = s.chars().take(80).collect();
                if shown.len() < s.len() {
                    format!("{shown:?}...")
                } else {
                    format!("{s:?}")
                }
            }
            Err(_) => "a string".into(),
        },
        Ok(ValueType::Number) => match unsafe { f64::from_napi_value(env, raw) } {
            Ok(n) => fmt_number(n),
            Err(_) => "a number".into(),
        },
        Ok(ValueType::Boolean) => match unsafe { bool::from_napi_value(env, raw) } {
            Ok(b) => b.to_string(),
            Err(_) => "a boolean".into(),
        },
        Ok(ValueType::Null) => "null".into(),
        Ok(ValueType::Undefined) => "undefined".into(),
        Ok(ValueType::Object) => {
            if unsafe { Vec::<Unknown>::from_napi_value(env, raw) }.is_ok() && is_array(v) {
                "an array".into()
            } else {
                "an object".into()
            }
        }
        Ok(ValueType::Function) => "a function".into(),
        Ok(ValueType::BigInt) => "a bigint".into(),
        Ok(ValueType::Symbol) => "a symbol".into(),
        _ => "a value of unknown type".into(),
    }
}

pub fn fmt_number(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e16 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

pub fn is_array(v: &Unknown) -> bool {
    let mut result = false;
    unsafe { napi::sys::napi_is_array(v.value().env, v.raw(), &mut result) };
    result
}

pub fn type_of(v: &Unknown) -> ValueType {
    v.get_type().unwrap_or(ValueType::Unknown)
}

pub fn is_nullish(v: &Unknown) -> bool {
    matches!(type_of(v), ValueType::Undefined | ValueType::Null)
}

pub fn string(what: &str, v: &Unknown) -> Outcome<String> {
    if type_of(v) != ValueType::String {
        return Err(Failure::Arg(format!("invalid {what} {}: must be a string", describe(v))));
    }
    Ok(unsafe { String::from_napi_value(v.value().env, v.raw()) }?)
}

pub fn boolean(what: &str, v: &Unknown) -> Outcome<bool> {
    if type_of(v) != ValueType::Boolean {
        return Err(Failure::Arg(format!("invalid {what} {}: must be true or false", describe(v))));
    }
    Ok(unsafe { bool::from_napi_value(v.value().env, v.raw()) }?)
}

/// A whole number in [min, 2^53].
pub fn whole(what: &str, v: &Unknown, min: u64) -> Outcome<u64> {
    let bad = |why: &str| Failure::Arg(format!("invalid {what} {}: {why}", describe(v)));
    if type_of(v) != ValueType::Number {
        return Err(bad("must be a number"));
    }
    let n = unsafe { f64::from_napi_value(v.value().env, v.raw()) }?;
    if !n.is_finite() || n.fract() != 0.0 || n < min as f64 || n > 9_007_199_254_740_992.0 {
        return Err(bad(&format!("must be a whole number of at least {min}")));
    }
    Ok(n as u64)
}

/// A finite number ≥ 0 (milliseconds that may have a fraction).
pub fn non_negative(what: &str, v: &Unknown) -> Outcome<f64> {
    let bad = |why: &str| Failure::Arg(format!("invalid {what} {}: {why}", describe(v)));
    if type_of(v) != ValueType::Number {
        return Err(bad("must be a number"));
    }
    let n = unsafe { f64::from_napi_value(v.value().env, v.raw()) }?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad("must be a finite number of at least 0"));
    }
    Ok(n)
}

/// A string or an array of strings.
pub fn strings(what: &str, v: &Unknown) -> Outcome<Vec<String>> {
    match type_of(v) {
        ValueType::String => Ok(vec![string(what, v)?]),
        ValueType::Object if is_array(v) => {
            let items = unsafe { Vec::<Unknown>::from_napi_value(v.value().env, v.raw()) }?;
            items.iter().map(|item| string(what, item)).collect()
        }
        _ => Err(Failure::Arg(format!("invalid {what} {}: must be a string or an array of strings", describe(v)))),
    }
}

/// An options object (undefined/null: none), refusing keys it does not know: a misspelt
/// `redisURL` must not silently give an in-memory limiter.
pub fn options<'env>(what: &str, v: Option<&Unknown<'env>>, known: &[&str]) -> Outcome<Option<Object<'env>>> {
    let Some(v) = v else { return Ok(None) };
    if is_nullish(v) {
        return Ok(None);
    }
    if type_of(v) != ValueType::Object || is_array(v) {
        return Err(Failure::Arg(format!("invalid {what} {}: must be an object", describe(v))));
    }
    let obj: Object<'env> = unsafe { Object::from_napi_value(v.value().env, v.raw()) }?;
    for key in Object::keys(&obj)? {
        if !known.contains(&key.as_str()) {
            return Err(Failure::Arg(format!("unknown {what} key {key:?}: expected one of {}", known.join(", "))));
        }
    }
    Ok(Some(obj))
}

/// A property that is present and neither undefined nor null.
pub fn field<'env>(obj: &Object<'env>, name: &str) -> Outcome<Option<Unknown<'env>>> {
    let v: Option<Unknown<'env>> = obj.get(name)?;
    Ok(v.filter(|u| !is_nullish(u)))
}
