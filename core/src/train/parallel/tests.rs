//! The replicas' checksum.

use super::*;
use crate::flow::{FlowConfig, Variant};
use burn::backend::Flex;
use burn::module::ModuleMapper;

#[test]
fn the_checksum_sees_a_change_of_one_bit_in_one_parameter() {
    let device = Default::default();
    let model = FlowModel::<Flex>::init(&FlowConfig::tiny(Variant::Both), &device);
    realise(&model);
    let copy = model.clone();
    assert_eq!(param_checksum(&model), param_checksum(&copy));
    // The last element of the first parameter, one unit in the last place up.
    struct Nudge(bool);
    impl<B: Backend> ModuleMapper<B> for Nudge {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            if self.0 {
                return param;
            }
            self.0 = true;
            let (id, t, mapper) = param.consume();
            let (dims, device) = (t.dims(), t.device());
            let mut v: Vec<f32> = t.into_data().to_vec().unwrap();
            let last = v.len() - 1;
            v[last] = f32::from_bits(v[last].to_bits() + 1);
            let t = Tensor::from_data(burn::tensor::TensorData::new(v, dims), &device);
            Param::from_mapped_value(id, t, mapper)
        }
    }
    let nudged = copy.map(&mut Nudge(false));
    assert_ne!(param_checksum(&model), param_checksum(&nudged));
}
